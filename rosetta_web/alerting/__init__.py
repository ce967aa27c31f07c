"""The alert engine: trends, rules, evaluation after each round, and delivery of the outbox.

No blueprint here (the pages and the API's alert endpoints live in rosetta_web/alerts/): the
monitor calls into it after storing a round.
"""
