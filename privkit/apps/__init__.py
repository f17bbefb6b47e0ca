"""privkit.apps"""
