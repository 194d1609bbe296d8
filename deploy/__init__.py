"""What a deployer runs around `pulumi up` against an AWS account: the Pulumi state backend
bootstrap, the account preflight (`doctor`), the deployer's IAM policy and the prebuilt server
image recipe. It may read the stack settings (`infra.settings`) and the offline graph; `infra/`
never imports it, and it never talks to a running MLflow server (that is `lifecycle/`)."""
