"""Pipeline glue the stages share: the workflow's gates, which teacher to load, where results go."""
