# shellcheck shell=bash
# The secured local stack (STACK_SECURITY=on), sourced by up.sh after lib.sh; not run directly.
# A CA and a server certificate for 127.0.0.1/localhost, generated passwords, Kafka's SASL_SSL
# listener with SCRAM-SHA-512 users and ACLs, MariaDB's TLS and two least-privilege users, and
# an env file per client. Who may do what, and why: stack/security/README.md.

SCRAM_MECHANISM=SCRAM-SHA-512
# admin administers the cluster over SASL_SSL; the others are the programs' principals: the pipeline's
# three, then the closed loop's (the purchase sink, the quality monitor, training on what was served).
KAFKA_ADMIN=admin
KAFKA_CLIENTS=(prediction-service producer consumer purchase-sink quality-monitor trainer)
# consumer.py reads without a group; other readers logged in as `consumer` use groups named so.
CONSUMER_GROUP_PREFIX=consumer-

CA_CERT="$SECURITY_DIR/ca.crt"
CA_KEY="$SECURITY_DIR/ca.key"
SERVER_CERT="$SECURITY_DIR/server.crt"
SERVER_KEY="$SECURITY_DIR/server.key"
SERVER_KEYSTORE="$SECURITY_DIR/server.p12"
ADMIN_CLIENT_CONFIG="$SECURITY_DIR/admin.properties"
# Certificates live this long, and are made anew when less than a week is left.
CERT_DAYS=825
CERT_RENEW_S=604800

security_on() { [[ "$STACK_SECURITY" == on ]]; }

# ---- Secrets and certificates ---------------------------------------------------

# secret_file NAME: prints the path of NAME's password file, creating it (random, 0600) once.
secret_file() {
    local file="$SECURITY_DIR/$1.password"
    if [[ ! -s "$file" ]]; then
        (umask 077 && openssl rand -hex 24 >"$file.tmp" && mv -f "$file.tmp" "$file") \
            || die "cannot write $file"
    fi
    printf '%s' "$file"
}

secret() { local file; file="$(secret_file "$1")" && printf '%s' "$(<"$file")"; }

certificates_valid() {
    local cert
    for cert in "$CA_CERT" "$SERVER_CERT"; do
        [[ -s "$cert" ]] && openssl x509 -checkend "$CERT_RENEW_S" -noout -in "$cert" >/dev/null 2>&1 || return 1
    done
    # The keystore is only as good as the password file that opens it.
    [[ -s "$SERVER_KEY" && -s "$SERVER_KEYSTORE" && -s "$SECURITY_DIR/keystore.password" ]]
}

# make_certificates: a CA, and a server certificate it signs for IP:127.0.0.1 and DNS:localhost,
# used by both Kafka (as a PKCS12 keystore) and MariaDB (as PEM files).
make_certificates() {
    certificates_valid && return 0
    info "security: creating a CA and a server certificate for 127.0.0.1 and localhost in $SECURITY_DIR"
    local keystore_password
    keystore_password="$(secret_file keystore)"
    (
        set -e
        umask 077
        cd "$SECURITY_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days "$CERT_DAYS" -subj "/CN=purchase-prediction local stack CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.crt
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" -keyout server.key -out server.csr
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid,issuer" >server.ext
        openssl x509 -req -sha256 -days "$CERT_DAYS" -in server.csr -CA ca.crt -CAkey ca.key \
            -set_serial "0x$(openssl rand -hex 16)" -extfile server.ext -out server.crt
        openssl pkcs12 -export -name server -in server.crt -inkey server.key -certfile ca.crt \
            -passout "file:$keystore_password" -out server.p12
        rm -f server.csr server.ext
        # Clients need the CA certificate, and only that.
        chmod 644 ca.crt
    ) >"$LOG_DIR/openssl.log" 2>&1 || die "openssl could not create the certificates; see $LOG_DIR/openssl.log"
    if kafka_running || mariadb_running; then
        warn "new certificates: a server already running keeps its old one until restarted (stack/down.sh, then stack/up.sh)"
    fi
}

# security_prepare: everything the servers read at start, before either is launched.
security_prepare() {
    command -v openssl >/dev/null || die "STACK_SECURITY=on needs openssl (apt-get install openssl)"
    (umask 077 && mkdir -p "$SECURITY_DIR") && chmod 700 "$SECURITY_DIR"
    make_certificates
    local user
    for user in "$KAFKA_ADMIN" "${KAFKA_CLIENTS[@]}" "$MYSQL_SERVICE_USER" "$MYSQL_LOADER_USER"; do
        secret_file "$user" >/dev/null
    done
    write_admin_client_config
}

# ---- Kafka ------------------------------------------------------------------------

# kafka_security_properties: the lines server.properties gains (listeners are set by up.sh).
kafka_security_properties() {
    cat <<EOF
# STACK_SECURITY=on: clients that log in use SASL_SSL on port $KAFKA_SASL_SSL_PORT.
sasl.enabled.mechanisms=$SCRAM_MECHANISM
listener.name.sasl_ssl.${SCRAM_MECHANISM,,}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$SERVER_KEYSTORE
ssl.keystore.password=$(secret keystore)
ssl.key.password=$(secret keystore)
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
# admin: the SASL_SSL administrator. ANONYMOUS: whoever comes through the PLAINTEXT and
# CONTROLLER listeners, which are bound to 127.0.0.1 and authenticate no one: the broker itself
# (inter-broker and controller traffic) and local development. No SASL_SSL login is ANONYMOUS.
super.users=User:$KAFKA_ADMIN;User:ANONYMOUS
EOF
}

# scram_arguments: kafka-storage format's --add-scram for every user, one argument a line.
scram_arguments() {
    local user
    for user in "$KAFKA_ADMIN" "${KAFKA_CLIENTS[@]}"; do
        printf '%s\n' --add-scram "$SCRAM_MECHANISM=[name=$user,password=$(secret "$user")]"
    done
}

write_admin_client_config() {
    local password
    password="$(secret "$KAFKA_ADMIN")"
    (
        umask 077
        cat >"$ADMIN_CLIENT_CONFIG.tmp" <<EOF
# Generated by stack/up.sh: Kafka's tools as $KAFKA_ADMIN, e.g. kafka-acls --command-config <this file>
security.protocol=SASL_SSL
sasl.mechanism=$SCRAM_MECHANISM
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_ADMIN" password="$password";
ssl.truststore.type=PEM
ssl.truststore.location=$CA_CERT
EOF
        mv -f "$ADMIN_CLIENT_CONFIG.tmp" "$ADMIN_CLIENT_CONFIG"
    ) || die "cannot write $ADMIN_CLIENT_CONFIG"
}

kafka_cluster_id() { sed -n 's/^cluster\.id=//p' "$STACK_DIR/kafka/data/meta.properties" 2>/dev/null; }

# users_fingerprint: what the cluster's SCRAM users were last made from: cluster id, names, passwords.
users_fingerprint() {
    local user
    { kafka_cluster_id; for user in "$KAFKA_ADMIN" "${KAFKA_CLIENTS[@]}"; do printf '%s:%s\n' "$user" "$(secret "$user")"; done; } \
        | sha256sum | cut -d' ' -f1
}

# kafka_acls: one line per kafka-acls --add run, each a list of its arguments.
kafka_acls() {
    local service="User:prediction-service" producer="User:producer" consumer="User:consumer"
    local sink="User:purchase-sink" monitor="User:quality-monitor" trainer="User:trainer"
    # predictions: the serving model's and the shadow's; outputs: those and the dead letters.
    local -a topics=(--topic "$INPUT_TOPIC") outputs=(--topic "$OUTPUT_TOPIC" --topic "$DLQ_TOPIC") predictions=(--topic "$OUTPUT_TOPIC")
    if [[ -n "$SHADOW_OUTPUT_TOPIC" ]]; then
        outputs+=(--topic "$SHADOW_OUTPUT_TOPIC")
        predictions+=(--topic "$SHADOW_OUTPUT_TOPIC")
    fi
    topics+=("${outputs[@]}")
    # The service, the producer and the consumer check at start that all the pipeline's topics exist,
    # so all three may see them; the closed loop's programs check only the topics they use.
    echo --allow-principal "$service" --allow-principal "$producer" --allow-principal "$consumer" --operation Describe "${topics[@]}"
    # The service: consumes the input in its group, creates missing topics, writes predictions
    # and dead letters, with one transactional producer per input partition (ids <group>-<topic>-<partition>).
    echo --allow-principal "$service" --operation Read --topic "$INPUT_TOPIC" --group "$KAFKA_GROUP_ID"
    echo --allow-principal "$service" --operation Create "${topics[@]}"
    echo --allow-principal "$service" --operation Write "${outputs[@]}"
    echo --allow-principal "$service" --operation Write --resource-pattern-type prefixed --transactional-id "$KAFKA_GROUP_ID-"
    # The producer writes events (and with --outcomes purchases); the consumer reads what the service
    # writes, and with --live the quality monitor's snapshots.
    echo --allow-principal "$producer" --operation Write --topic "$INPUT_TOPIC" --topic "$PURCHASES_TOPIC"
    echo --allow-principal "$consumer" --operation Read "${outputs[@]}" --topic "$QUALITY_TOPIC"
    echo --allow-principal "$consumer" --operation Read --resource-pattern-type prefixed --group "$CONSUMER_GROUP_PREFIX"
    # The purchase sink consumes purchases in its group, creates their topic when missing (before
    # the producer sends any), and dead-letters invalid ones.
    echo --allow-principal "$sink" --operation Read --topic "$PURCHASES_TOPIC" --group "$PURCHASES_GROUP_ID"
    echo --allow-principal "$sink" --operation Create --topic "$PURCHASES_TOPIC"
    echo --allow-principal "$sink" --operation Write --topic "$DLQ_TOPIC"
    # The quality monitor reads predictions and purchases in no group, and reads back and writes its
    # snapshots on a topic it creates itself (one compacted partition: its last record is the checkpoint).
    echo --allow-principal "$monitor" --operation Read "${predictions[@]}" --topic "$PURCHASES_TOPIC" --topic "$QUALITY_TOPIC"
    echo --allow-principal "$monitor" --operation Write --operation Create --topic "$QUALITY_TOPIC"
    # Training on what was served reads the predictions and joins them with their events, in no group.
    echo --allow-principal "$trainer" --operation Read --topic "$INPUT_TOPIC" --topic "$OUTPUT_TOPIC"
}

# run_all NAME LOGS: runs the commands the function `NAME_command INDEX LINE` builds for each line
# on stdin, all at once (each is a JVM that mostly waits), logging into LOGS/NAME-INDEX.log, and
# fails if any fails.
run_all() {
    local name="$1" logs="$2" line index=0 failed=0 pid
    local -a pids=()
    while IFS= read -r line; do
        "${name}_command" "$index" "$line" >"$logs/$name-$index.log" 2>&1 &
        pids+=("$!")
        index=$((index + 1))
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    ((!failed)) || { tail -n 5 "$logs/$name"-*.log >&2; die "$name failed; see $logs/$name-*.log"; }
}

scram_users_command() { # INDEX USER: sets the user's password through the PLAINTEXT listener
    kafka_tool_with_secrets "$SECURITY_DIR/.scram-$1.args" kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --alter --entity-type users --entity-name "$2" --add-config "$SCRAM_MECHANISM=[password=$(secret "$2")]"
}

kafka_acls_command() { # INDEX ARGUMENTS
    local -a arguments
    read -r -a arguments <<<"$2"
    kafka_tool org.apache.kafka.tools.AclCommand kafka-acls.sh --bootstrap-server "127.0.0.1:$KAFKA_SASL_SSL_PORT" \
        --command-config "$ADMIN_CLIENT_CONFIG" --add "${arguments[@]}"
}

# kafka_secure: after the broker is up, the SCRAM users (when the log was formatted without them,
# or a password file is new) and the ACLs, each only when what they are made from changed.
kafka_secure() {
    local stamp="$SECURITY_DIR/kafka-users.done" fingerprint
    fingerprint="$(users_fingerprint)"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$fingerprint" ]]; then
        info "Kafka: setting the passwords of the SCRAM users $KAFKA_ADMIN ${KAFKA_CLIENTS[*]}"
        # Its logs could quote a password: they stay in the private security directory.
        printf '%s\n' "$KAFKA_ADMIN" "${KAFKA_CLIENTS[@]}" | run_all scram_users "$SECURITY_DIR"
        echo "$fingerprint" >"$stamp"
    fi
    stamp="$SECURITY_DIR/kafka-acls.done"
    fingerprint="$(kafka_cluster_id; kafka_acls)"
    if [[ "$(cat "$stamp" 2>/dev/null)" != "$fingerprint" ]]; then
        info "Kafka: adding the ACLs of ${KAFKA_CLIENTS[*]} (stack/security/README.md)"
        kafka_acls | run_all kafka_acls "$LOG_DIR"
        printf '%s\n' "$fingerprint" >"$stamp"
    fi
}

# ---- MariaDB ----------------------------------------------------------------------

mariadb_security_cnf() {
    cat <<EOF
# STACK_SECURITY=on: TLS with the stack's certificate, which prediction_service and prediction_loader must use.
ssl_ca = $CA_CERT
ssl_cert = $SERVER_CERT
ssl_key = $SERVER_KEY
EOF
}

# mariadb_security_sql DB: the two least-privilege users, TLS only, over TCP from 127.0.0.1.
mariadb_security_sql() {
    local db_tables db_grant user pass
    db_tables="$(sql_ident "$1")"
    db_grant="$(sql_ident "${1//_/\\_}")"
    for user in "$MYSQL_SERVICE_USER" "$MYSQL_LOADER_USER"; do
        pass="$(sql_str "$(secret "$user")")"
        user="$(sql_str "$user")@'127.0.0.1'"
        printf '%s\n' "CREATE USER IF NOT EXISTS $user IDENTIFIED BY $pass REQUIRE SSL;" \
            "ALTER USER $user IDENTIFIED BY $pass REQUIRE SSL;"
    done
    user="$(sql_str "$MYSQL_SERVICE_USER")@'127.0.0.1'"
    # The service reads two tables. A table-level grant on a table that does not exist yet (the
    # loader creates them) must include CREATE, which is taken back at once; the grant stays
    # with the name when the loader drops and recreates the table.
    local table
    for table in user_features feature_set; do
        printf '%s\n' "GRANT SELECT, CREATE ON $db_tables.$(sql_ident "$table") TO $user;" \
            "REVOKE CREATE ON $db_tables.$(sql_ident "$table") FROM $user;"
    done
    # The loader builds the store; the purchase sink (inserts purchases, rewrites users' rows and
    # the change number) and training on what was served (events in a temporary table) log in as it too.
    user="$(sql_str "$MYSQL_LOADER_USER")@'127.0.0.1'"
    printf '%s\n' "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE TEMPORARY TABLES ON $db_grant.* TO $user;"
}

# ---- Clients' env files -----------------------------------------------------------

# write_env_file FILE NAME=VALUE...: single-quoted, as python-dotenv and `source` both read them.
write_env_file() {
    local file="$1" pair
    shift
    {
        echo "# Generated by stack/up.sh (STACK_SECURITY=on); edits are overwritten."
        for pair in "$@"; do printf "%s='%s'\n" "${pair%%=*}" "${pair#*=}"; done
    } >"$file.tmp" && mv -f "$file.tmp" "$file" || die "cannot write $file"
}

write_client_env_files() {
    local principal user
    for principal in "${KAFKA_CLIENTS[@]}"; do
        write_env_file "$SECURITY_DIR/$principal.env" \
            "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_SASL_SSL_PORT" KAFKA_SECURITY_PROTOCOL=SASL_SSL \
            "KAFKA_SASL_MECHANISM=$SCRAM_MECHANISM" "KAFKA_SASL_USERNAME=$principal" \
            "KAFKA_SASL_PASSWORD_FILE=$(secret_file "$principal")" "KAFKA_SSL_CAFILE=$CA_CERT"
    done
    for user in "$MYSQL_SERVICE_USER" "$MYSQL_LOADER_USER"; do
        write_env_file "$SECURITY_DIR/mysql-$user.env" \
            MYSQL_HOST=127.0.0.1 "MYSQL_PORT=$MYSQL_PORT" "MYSQL_DATABASE=$MYSQL_DATABASE" "MYSQL_USER=$user" \
            "MYSQL_PASSWORD_FILE=$(secret_file "$user")" MYSQL_SSL_MODE=verify_identity "MYSQL_SSL_CA=$CA_CERT"
    done
}
