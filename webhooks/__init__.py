"""The payment provider's way in: a plain Starlette route, verified before parsed."""
