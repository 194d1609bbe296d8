"""The mlflow-stack CrossGuard policy pack.

- `rules/`       every rule as a pure function over resources, grouped by area
- `spec.py`      a rule's definition (level, config schema with defaults, check)
- `model.py`     the resource/context values rules look at
- `pack.py`      rules -> pulumi_policy policies (no server)
- `__main__.py`  constructs the PolicyPack: what the Pulumi engine runs
- `analyzer.py`  runs the pack as the engine does (subprocess + analyzer gRPC), for offline previews
- `report.py`    the reviewer's preview (resources, violations, cost) as text or Markdown
- `waivers.py`   stack overrides (`mlflow-stack:overrides`) as policy configuration
"""
