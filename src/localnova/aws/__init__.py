"""What the Bedrock path knows of the AWS account, below the backends that use it: the clients
and the one retry policy, resource names and tokens, the state file, and where Bedrock offers
what. Nothing here creates a resource; boto3 is imported inside the functions that call AWS.
"""
