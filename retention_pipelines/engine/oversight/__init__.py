"""What keeps a human in the loop: legal holds, the manual-resolution queue, SLA breaches."""
