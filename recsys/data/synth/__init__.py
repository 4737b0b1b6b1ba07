"""MovieLens-shaped synthetic ratings with a planted preference structure (``recsys synth``):
``params`` (the shape and its presets), ``catalogue`` (movies, users, tastes and timelines),
``generate`` (the ratings), ``metadata`` (titles and tags) and ``release`` (the files on disk).


A release folder that recsys.data.prepared's loader and ``recsys ingest --source`` read like the real one:
``ratings.csv`` (userId,movieId,rating,timestamp, sorted by userId then movieId), ``movies.csv``
(movieId,title,genres), ``tags.csv`` (userId,movieId,tag,timestamp) and ``README.txt`` (synthetic,
generator version, parameters, realised statistics). Same parameters and seed -> byte-identical
files.

Shape, after ml-20m: user ids 1..U, each user >= 20 ratings plus a lognormal tail; sparse movie
ids up to ~4.9 x M; movie popularity along ml-20m's rank-frequency curve, every movie rated at
least once; ml-20m's star histogram (whole stars only before 2003-02-18, as on MovieLens);
timestamps 1995-2015 in per-user sessions (ratings seconds apart, sessions days to years apart).

Planted structure: each movie belongs to one of K latent clusters, whose genres it carries, and
to a theme (~40 movies of its cluster: a franchise, a director). Each user has an early and a late
taste (three weighted clusters each); the late one gains weight along the user's timeline. A
rating is drawn from the theme of its run (a few consecutive ratings), the cluster of its session,
the user's current taste or global popularity, by popularity inside that group; its stars rise with
the user's current affinity to the movie's cluster. So later positives follow earlier and recent
ones: on the small preset a cluster-aware popularity baseline has about 3.5x MostPop's Recall@10.
Titles and tags carry the structure too, noisily (recsys.data.synth.metadata), so a content item
tower can place a movie it never trained; ml-20m's tag counts (2.3 tags per 100 ratings, from 5.6%
of the users).
"""
