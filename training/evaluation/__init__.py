"""Scoring models on whole documents, and explaining the scores.

- ``scores``: seqeval (default and strict IOB2), exact spans, MUC, intervals, comparisons, text output;
- ``bootstrap``: resampling documents for intervals and paired tests;
- ``error_analysis``: error kinds and type confusions; ``label_map``: reconciling label sets;
- ``report``: the HTML report; ``model_card``: the README of a model directory.
"""
