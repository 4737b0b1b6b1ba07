"""One function per pipeline task, one module per DAG; the CLI and the Airflow DAGs are thin
shells over these. May import every other subpackage; nothing in ``recsys`` imports it but the CLI.
"""
