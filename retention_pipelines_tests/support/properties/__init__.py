"""The property suite's model, generators and harness, and its figures for the reliability table."""
