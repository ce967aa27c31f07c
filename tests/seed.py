"""Request bodies as Rosetta's first users wrote them (the README's curl example among them)."""

SOURCE = {
    "name": "production-postgres",
    "pg_host": "postgres.example.com",
    "pg_port": 5432,
    "pg_database": "myapp_production",
    "pg_username": "replication_user",
    "pg_password": "SecurePassword123!",
    "publication_name": "dbz_publication",
    "replication_id": 1,
}

DESTINATION = {
    "name": "snowflake-production",
    "snowflake_account": "xy12345.us-east-1",
    "snowflake_user": "ETL_USER",
    "snowflake_database": "ANALYTICS",
    "snowflake_schema": "RAW_DATA",
    "snowflake_role": "SYSADMIN",
    "snowflake_private_key_path": "user/snowflake_key.p8",
    "snowflake_host": "xy12345.snowflakecomputing.com",
}

PIPELINE = {
    "name": "production-to-snowflake",
    "source_id": 1,
    "destination_id": 1,
    "status": "START",
}

PASSPHRASE = "Key-Passphrase-42!"
