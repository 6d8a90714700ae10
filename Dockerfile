# syntax=docker/dockerfile:1
# The otpd image: `docker build -t otpd .` (docker-compose.yml builds it as otpd:local).
# Runs `otpd run` as the unprivileged user otpd (uid 10001) with its data in /var/lib/otpd;
# configure it with OTPD_<SECTION>__<KEY> variables (docs/configuration.md).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target/ live in BuildKit cache mounts: a rebuild after a source change
# compiles otpd, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin otpd \
    && cp target/release/otpd /usr/local/bin/otpd

FROM debian:bookworm-slim
# ca-certificates: TLS to providers (Twilio, webhooks, SMTP) and ScyllaDB; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 otpd \
    && useradd --system --uid 10001 --gid otpd --home-dir /var/lib/otpd --no-create-home \
       --shell /usr/sbin/nologin otpd \
    && install -d -o otpd -g otpd -m 0750 /var/lib/otpd /var/lib/otpd/outbox
COPY --from=builder /usr/local/bin/otpd /usr/local/bin/otpd
# The API on 8080 for the world; metrics, readiness details and the admin API on 9464, which
# only the private network (Prometheus, operators) may reach: never publish it.
ENV OTPD_NODE__DATA_DIR=/var/lib/otpd OTPD_HTTP__LISTEN=0.0.0.0:8080 OTPD_ADMIN__LISTEN=0.0.0.0:9464
WORKDIR /var/lib/otpd
USER otpd
# 8080: the API (http.listen); 4370: the other cluster nodes (cluster.listen);
# 9464: metrics, readiness details and the admin API (admin.listen; private network only).
EXPOSE 8080 4370 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/health/ready || exit 1
ENTRYPOINT ["otpd"]
CMD ["run"]
