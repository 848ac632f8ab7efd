"""Board targets for clln bitstreams (``clln.boards``)."""
