# mailfwd image: a static binary on a minimal base, running as non-root.
#   docker build -t mailfwd .
#   docker run -p 25:2525 -v /etc/mailfwd:/etc/mailfwd:ro -v mailfwd-spool:/var/spool/mailfwd mailfwd
# The build step is deploy/build-static.sh, the same command the end-to-end
# suite builds its binary with in CI.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party ./third_party
RUN go mod download
COPY . .
RUN ./deploy/build-static.sh /out/mailfwd && mkdir -p /out/spool

# distroless/static: no shell, no package manager, no build tools.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mailfwd /usr/local/bin/mailfwd
COPY --from=build --chown=65532:65532 /out/spool /var/spool/mailfwd
# The config is mounted read-only at /etc/mailfwd; the spool is a volume.
VOLUME ["/var/spool/mailfwd"]
# Non-root cannot bind port 25: listen on 2525 and publish it as 25.
EXPOSE 2525
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
  CMD ["/usr/local/bin/mailfwd", "health", "-url", "http://127.0.0.1:9925/healthz"]
ENTRYPOINT ["/usr/local/bin/mailfwd"]
CMD ["serve", "-config", "/etc/mailfwd/mailfwd.yaml"]
