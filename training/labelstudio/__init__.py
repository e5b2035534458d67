"""Working with a Label Studio server.

- ``server``: the local server (start, stop, status; 127.0.0.1 only);
- ``client``: a connection with retries; push a project, tasks and predictions; pull snapshots,
  and resolve a config's ``data.label_studio`` source into a snapshot file (``resolve_source``);
- ``predictions``: tagger output as Label Studio pre-annotations;
- ``ml_backend``: a model served as a Label Studio ML backend (``python -m training serve``).
"""
