"""The Bedrock resources a study creates and checks, one stage each: the Knowledge Base,
customization jobs, hosting, cleanup, the preflight, the call plan and what was spent.

Every module here imports boto3 inside the functions that call AWS, so planning, costing and
the dry run work offline without boto3 or credentials.
"""
