"""Who and what a record is: a domain's canonical record ids and a data subject's address."""
