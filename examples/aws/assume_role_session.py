"""Read AWS secrets and work with an assumed role through leaseline, as a training task would.

Against AWS (credentials from the standard chain: IRSA/web identity, instance or container
role, AWS_PROFILE...)::

    python examples/aws/assume_role_session.py \\
        --secret aws-sm://prod/openai --role arn:aws:iam::123456789012:role/train

Without AWS, ``--demo`` starts a local moto server (``pip install 'moto[server]'``), creates a
secret, a parameter and uses a role there::

    python examples/aws/assume_role_session.py --demo

Values are never printed: the script reports field names, lengths, versions and expiry.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time

import leaseline
import leaseline.aws


def report(resolver: leaseline.Resolver, ref: str) -> None:
    secret = resolver.get(ref)
    print(f"{ref}: {secret!r} version={secret.version}")
    for field in secret.fields:
        print(f"  {field}: {len(secret.reveal(field))} characters")


def work_as_role(resolver: leaseline.Resolver, role_ref: str) -> None:
    creds = resolver.get(role_ref)
    assert creds.lease is not None
    left = creds.lease.expires_at - time.time()
    print(f"{role_ref}: fields {creds.fields}, expires in {left:.0f}s (not renewable)")
    session = leaseline.aws.session(role_ref, resolver)  # refreshes itself ahead of expiry
    caller = session.client("sts").get_caller_identity()
    print(f"  signed in as {caller['Arn']}")
    buckets = session.client("s3").list_buckets()["Buckets"]
    print(f"  {len(buckets)} S3 bucket(s) visible")


def demo() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    import boto3

    boto3.client("secretsmanager").create_secret(
        Name="prod/openai",
        SecretString=json.dumps({"api_key": "sk-demo-" + secrets.token_hex(16), "org": "demo"}),
    )
    boto3.client("ssm").put_parameter(
        Name="/ml/huggingface/token", Value=secrets.token_hex(20), Type="SecureString"
    )
    boto3.client("s3").create_bucket(Bucket="training-data")
    try:
        run(
            "aws-sm://prod/openai",
            "aws-ssm:///ml/huggingface/token",
            "arn:aws:iam::123456789012:role/train",
        )
    finally:
        server.stop()


def run(secret_ref: str, param_ref: str | None, role_arn: str | None) -> None:
    with leaseline.Resolver() as resolver:
        report(resolver, secret_ref)
        if param_ref:
            report(resolver, param_ref)
        if role_arn:
            work_as_role(resolver, f"aws-sts://{role_arn}?duration=900")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="run against a local moto server")
    parser.add_argument("--secret", default="aws-sm://prod/openai")
    parser.add_argument("--parameter", default=None, help="e.g. aws-ssm:///ml/openai/key")
    parser.add_argument("--role", default=None, help="a role ARN to assume")
    args = parser.parse_args()
    if args.demo:
        demo()
    else:
        run(args.secret, args.parameter, args.role)


if __name__ == "__main__":
    main()
