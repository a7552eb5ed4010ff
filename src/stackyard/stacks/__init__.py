"""Stacks and their stages: the records every service looks up first.

``service.py`` creates, changes and deletes stacks (the API's ``/stacks``) and finds one by
name; ``stages.py`` says which stages a stack has. Both the pipeline and the deploy
services sit above this package, so neither owns what the other needs.
"""
