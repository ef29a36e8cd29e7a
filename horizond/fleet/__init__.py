"""The fleet: every master on one Redis and prefix is a member (a single host is a fleet of one).

Membership (member.py): each master writes its entry every heartbeat, adopts the stored desired
state (pause, scale) and runs the fleet's one-off commands through the same command layer as
every other transport; a wake message on pub/sub makes it act within a second. The operator's
side (commands.py): send a fleet command, collect the nodes' confirmations, list the nodes and
merge their entries into one view (the decisions are pure, in core/fleetview.py).
Leadership (node.py, budget.py, leader.py, leasekeys.py): one master holds a fenced lease, grants
each node its share of the supervisors' fleet budgets (core/fleetplan.py) and settles the jobs of
nodes that stopped heartbeating.
May import: core, connection, observe, control and the top-level helpers; supervise imports fleet.
"""
