#!/bin/sh
# A throwaway nginx on 127.0.0.1 serving a folder, for the loader's HTTP tests and benchmarks.
#   nginx_loopback.sh start DOCROOT WORKDIR   prints the port it listens on (config, pid, logs in WORKDIR)
#   nginx_loopback.sh stop WORKDIR            stops that nginx
# Only loopback; never another address. NGINX overrides the binary (default /usr/sbin/nginx, then PATH).
set -eu
NGINX=${NGINX:-/usr/sbin/nginx}
[ -x "$NGINX" ] || NGINX=$(command -v nginx)
case "${1:-}" in
start)
    root=$(cd "$2" && pwd)
    mkdir -p "$3"
    work=$(cd "$3" && pwd)
    mkdir -p "$work/logs" "$work/tmp"
    user_line=""
    [ "$(id -u)" = 0 ] && user_line="user root;"
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 ))
        cat > "$work/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon on;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 256; }
http {
    access_log $work/logs/access.log;
    client_body_temp_path $work/tmp/body;
    proxy_temp_path $work/tmp/proxy;
    fastcgi_temp_path $work/tmp/fastcgi;
    uwsgi_temp_path $work/tmp/uwsgi;
    scgi_temp_path $work/tmp/scgi;
    sendfile on;
    server {
        listen 127.0.0.1:$port;
        root $root;
        location / { }
    }
}
EOF
        if "$NGINX" -p "$work" -c "$work/nginx.conf" -e "$work/logs/error.log" </dev/null >/dev/null 2>"$work/logs/start.err"; then
            # wait until it answers
            for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
                [ -s "$work/nginx.pid" ] && break
                sleep 0.05
            done
            echo "$port"
            exit 0
        fi
    done
    cat "$work/logs/start.err" >&2
    exit 1
    ;;
stop)
    work=$2
    if [ -s "$work/nginx.pid" ]; then
        kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            [ -e "$work/nginx.pid" ] || break
            sleep 0.05
        done
    fi
    ;;
*)
    echo "usage: $0 start DOCROOT WORKDIR | stop WORKDIR" >&2
    exit 2
    ;;
esac
