"""The Bedrock path: Knowledge Base, customization jobs, hosting, state, cleanup and the dry run.

Every module here imports boto3 inside the functions that call AWS, so planning, costing and
the dry run work offline without boto3 or credentials.
"""
