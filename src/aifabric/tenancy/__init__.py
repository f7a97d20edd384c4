"""Tenancy: who is asking (keys, principals), what they may do (roles, limits) and in what order
(priorities). Between the gateway, which calls it on every request, and routing, below it."""
