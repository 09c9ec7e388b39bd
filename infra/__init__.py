"""Bottom floor: settings, security, broker, cache, limiter and observability.

Nothing here imports the product's packages.
"""
