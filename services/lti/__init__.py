"""The LTI 1.3 tool service (``proctor-lti``)."""
