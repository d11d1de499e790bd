# Images of joc-ha-operator and joc-ha-sidecar: static musl binaries on a
# distroless base, running as the non-root user 65532.
#
#   docker build --target operator -t joc-ha-operator .
#   docker build --target sidecar  -t joc-ha-sidecar .

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# SQLite is compiled in (bundled), so the C compiler must target musl too.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
# Profile `dist` (Cargo.toml): built for size, panics abort.
RUN cargo build --profile dist --locked --target x86_64-unknown-linux-musl \
      -p joc-ha-operator -p joc-ha-sidecar \
 && mkdir /out \
 && cp target/x86_64-unknown-linux-musl/dist/joc-ha-operator \
       target/x86_64-unknown-linux-musl/dist/joc-ha-sidecar /out/

FROM gcr.io/distroless/static-debian12:nonroot AS operator
COPY --from=build /out/joc-ha-operator /usr/local/bin/joc-ha-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/joc-ha-operator"]

FROM gcr.io/distroless/static-debian12:nonroot AS sidecar
COPY --from=build /out/joc-ha-sidecar /usr/local/bin/joc-ha-sidecar
USER 65532:65532
EXPOSE 9086
ENTRYPOINT ["/usr/local/bin/joc-ha-sidecar"]
