#!/bin/sh
# Start Kafka in the xcorrflow image. The native stack's server.properties template is rendered for a container
# (every interface, ports 9092/9093, data in /var/lib/kafka/data); then every KAFKA_* environment variable is
# appended as a property, the way the official apache/kafka image reads them (KAFKA_ADVERTISED_LISTENERS ->
# advertised.listeners; later lines win), so the fixtures configure this image and the official one alike.
# The storage is formatted on the first start only.
set -eu
home=/opt/kafka
data=/var/lib/kafka/data
props=$home/server.properties
mkdir -p "$data" /var/log/kafka

sed -e 's|${host}|0.0.0.0|g' -e 's|${port}|9092|g' -e 's|${controller_port}|9093|g' -e "s|\${data_dir}|$data|g" \
  "$home/server.properties.tmpl" > "$props"
env | grep '^KAFKA_' | grep -v '^KAFKA_HEAP_OPTS=' | while IFS='=' read -r name value; do
  # ___ -> '-', __ -> '_', _ -> '.', lower case: the official image's naming
  key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
  printf '%s=%s\n' "$key" "$value"
done >> "$props"

if [ ! -f "$data/meta.properties" ]; then
  # never a leading '-' (1 id in 64), which StorageTool would read as an option: Kafka's Uuid.randomUuid skips those too
  cluster_id=-
  while [ "${cluster_id#-}" != "$cluster_id" ]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
  done
  java -cp "$home/libs/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$props" --ignore-formatted
fi
# C1 only, as the native stack (xcorrflow/localstack/kafka.py): C2 compiling cost the broker most of its CPU
# shellcheck disable=SC2086 # the heap options are a list of words
exec java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=$home/log4j2.properties -Dkafka.logs.dir=/var/log/kafka \
  -cp "$home/libs/*" kafka.Kafka "$props"
