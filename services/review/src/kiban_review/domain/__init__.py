"""Pure rules of the review service: no framework, no I/O.

- `spec`: what an application may ask for (resources, code patterns, data items).
- `workflow`: the application's states and the transitions allowed between them.
- `rule`: the committee's decision rule (quorum, expertise groups, majorities).
- `certification`: whether an organization is a certified user on a given day.
- `register`: numbering of approvals in the public register.
- `promptness`: time from submission to decision and its median.
"""
