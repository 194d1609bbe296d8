"""Review tooling around the Pulumi program, never part of what `pulumi up` deploys.

The program under Pulumi's mocks with every resource's inputs and dependencies (`offline`), the
monthly cost estimate and its price table (`cost`), driving the policy pack over the analyzer
protocol (`analyzer`), and the preview report a reviewer reads (`build`, `report`). It imports
`infra/` and `policies/`; neither imports it.
"""
