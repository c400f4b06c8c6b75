#!/bin/sh
# Start PHP-FPM and nginx side by side; stop both when either stops.
#  - $PORT (default 8080) is where nginx listens: rendered into /tmp/nginx/default.conf.
#  - Laravel's caches are built here, at start, because its configuration comes from the
#    task's environment and secrets, which the image does not have at build time.
#  - SIGTERM (ECS stopping the task) becomes a graceful QUIT for both; the container then
#    exits 0. If either process dies on its own, the other is stopped and the exit code is 1,
#    so ECS replaces the task.
set -eu

# A command given to the container (ECS's one-off migration task: `php artisan migrate --force`)
# runs instead of the web server.
if [ "$#" -gt 0 ]; then
    exec "$@"
fi

: "${PORT:=8080}"
: "${NGINX_TEMPLATE:=/etc/nginx/templates/default.conf.template}"
: "${NGINX_CONF_DIR:=/tmp/nginx}"
mkdir -p "$NGINX_CONF_DIR"
sed "s/\${PORT}/${PORT}/g" "$NGINX_TEMPLATE" > "$NGINX_CONF_DIR/default.conf"

if [ "${APP_CACHE_AT_START:-1}" = "1" ]; then
    php artisan config:cache
    php artisan route:cache
    php artisan event:cache
    php artisan view:cache
fi

php-fpm --nodaemonize --force-stderr &
fpm=$!
nginx -g 'daemon off;' &
web=$!

stopping=0
stop() {
    stopping=1
    kill -QUIT "$web" "$fpm" 2>/dev/null || true
}
trap stop TERM INT QUIT

while kill -0 "$fpm" 2>/dev/null && kill -0 "$web" 2>/dev/null; do
    sleep 1 &
    wait $! || true
done
if [ "$stopping" = 1 ]; then
    status=0
else
    status=1
    echo "app-entrypoint: php-fpm or nginx exited on its own; stopping the container" >&2
fi
stop
wait "$fpm" 2>/dev/null || true
wait "$web" 2>/dev/null || true
exit "$status"
