"""The two-tower recommender: model, training examples from sequences, training, ONNX export."""
