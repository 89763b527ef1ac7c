"""Treatment plans and adherence: what a person meant to do, what they did, what is due.

* ``schedule``: pure rules expanding a plan's phases into due slots (local time -> UTC, DST and
  time-zone moves). ``adherence``: pure rules crediting recorded sessions to slots.
* ``templates``: the built-in plans. ``codec``: plans as stored JSON. ``quiet``: quiet hours.
* ``service``: reads plans and sessions from storage and computes adherence (and the summary
  an MQTT bridge or web page reads). ``planner``: the task that publishes "due" and "missed"
  events and sends reminders. ``reminders``: notifications through apprise, off by default.

The pure modules import no storage and read no clock; docs/plans.md gives the rules.
"""
