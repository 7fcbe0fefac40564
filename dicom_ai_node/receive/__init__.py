"""Receive: accept associations, answer C-ECHO and C-STORE, each instance stored before Success."""
