"""The alert engine: trends, rules, evaluation after each round, and delivery of the outbox.

No blueprint here (the alert pages and the API's alert endpoints are the alerts area around
it, the channels rosetta_web/channels/): the monitor calls into it after storing a round.
"""
