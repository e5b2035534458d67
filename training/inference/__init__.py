"""Tagging with a trained model: ``Tagger`` (``tagger``), its ONNX Runtime backend
(``onnx_backend``) and int8 quantization with calibrated activation ranges (``quantization``).

``from training import Tagger`` is the public entry point.
"""
