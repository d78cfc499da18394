# shellcheck shell=bash
# The two database accounts of docker-compose.yml, with least privilege as the local stack's
# (stack/security.sh): the mariadb image's entrypoint sources this from /docker-entrypoint-initdb.d
# on the first start (an empty data volume), after creating MARIADB_DATABASE, as root.
#
#   PREDICTION_SERVICE_USER  SELECT on user_features and feature_set: the prediction service
#   PREDICTION_LOADER_USER   SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX and CREATE
#                            TEMPORARY TABLES on the store's database: the trainer (the loader, then
#                            training, which loads served events into a temporary table with
#                            --from-logged) and the purchase sink
#
# Nobody gets anything on *.*. Both may connect from any container of the compose network ('%').
# Sourced, not run, because it uses the entrypoint's functions; so it must not be executable.
# Passwords are read here once: to change one later, ALTER USER as root, or start afresh with
# `docker compose down -v`.

if ! declare -F docker_process_sql >/dev/null; then
    echo "mariadb-users.sh: must be sourced by the mariadb image's entrypoint (is it executable? chmod -x it)" >&2
    exit 1
fi

# prediction_users_sql: the statements, on stdout. Every name and password is quoted with the
# entrypoint's own escaping, so any character in .env reaches the server as data.
prediction_users_sql() {
    local variable database grant_database service loader table
    for variable in MARIADB_DATABASE PREDICTION_SERVICE_USER PREDICTION_SERVICE_PASSWORD \
        PREDICTION_LOADER_USER PREDICTION_LOADER_PASSWORD; do
        [[ -n "${!variable:-}" ]] || mysql_error "$variable is empty; docker-compose.yml sets it from .env"
    done
    [[ "$PREDICTION_SERVICE_USER" != "$PREDICTION_LOADER_USER" ]] \
        || mysql_error "MYSQL_USER must not be $PREDICTION_LOADER_USER, the trainer's account: choose another name in .env"
    database="\`${MARIADB_DATABASE//\`/\`\`}\`"
    # In a database-level grant `_` is a wildcard; escaped, the grant names this database alone.
    grant_database="${database//_/\\_}"
    service="'$(docker_sql_escape_string_literal "$PREDICTION_SERVICE_USER")'@'%'"
    loader="'$(docker_sql_escape_string_literal "$PREDICTION_LOADER_USER")'@'%'"
    # The escaping above is backslashes, which this mode would turn off.
    echo "SET @@SESSION.SQL_MODE = REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');"
    echo "CREATE USER $service IDENTIFIED BY '$(docker_sql_escape_string_literal "$PREDICTION_SERVICE_PASSWORD")';"
    echo "CREATE USER $loader IDENTIFIED BY '$(docker_sql_escape_string_literal "$PREDICTION_LOADER_PASSWORD")';"
    # A table-level grant on a table that does not exist yet (the loader creates it) must include
    # CREATE, which is taken back at once; the grant stays with the name when the loader drops
    # and recreates the table.
    for table in user_features feature_set; do
        echo "GRANT SELECT, CREATE ON $database.\`$table\` TO $service;"
        echo "REVOKE CREATE ON $database.\`$table\` FROM $service;"
    done
    echo "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES ON $grant_database.* TO $loader;"
}

# Made in full before any of it runs: a missing value stops the entrypoint with nothing done.
prediction_users="$(prediction_users_sql)" || exit 1
mysql_note "creating the accounts $PREDICTION_SERVICE_USER (reads the features) and $PREDICTION_LOADER_USER (loads the store)"
docker_process_sql --binary-mode <<<"$prediction_users"
unset prediction_users
