"""The model side of training and inference.

- ``encoder``: resolve the encoder (local dir, packaged copy, hub id), its tokenizer with case
  markers, a fresh token-classification model, a trained model directory;
- ``windows``: words -> overlapping subword windows, labels aligned to them, window ownership;
- ``hardware``: whether bf16 autocast pays off on this machine.
"""
