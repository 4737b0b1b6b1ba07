"""The similar-movies item tower: model and triplet loss, training, ONNX export."""
