"""The data plane: `flask rosetta engine` runs Debezium for each pipeline and loads Snowflake."""
