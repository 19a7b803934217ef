"""The report stage: read runs from a study's store (`collect`), draw figures (`figures`),
write report.md and a self-contained report.html (`render`), export flat tables (`export`).

Reads the store only: no backend, torch or boto3 is imported here.
"""
