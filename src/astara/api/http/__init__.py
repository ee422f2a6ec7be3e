"""The tenant and operators' HTTP routes, one APIRouter per resource.

Writing a route: put it on an `dependencies.authenticated_router()` (every
request reaching it was authenticated by `authentication.Authentication`
before routing) and take what it needs as parameters: `TransactionDep` to
run `work(session, caller)` in one transaction (retried after a lost race,
the orchestrator poked after a write), `CallerDep` for the caller alone,
`ServicesDep` for the agent and orchestrator. Read bodies with `json_body`,
raise `NeutronError` for errors. Then include the router in `app.create_app`.
"""
