"""Keeping a router current with the Hub: crawl new models, write their experience, cold-start, learn them
behind a forgetting gate (``hubroute update``)."""
