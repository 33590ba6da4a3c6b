# sodeda-era5 in a container: the dashboard by default, `sodeda-mount` when asked.
#   docker build -t sodeda-era5 .
#   docker run --rm -p 7860:7860 -v era5-cache:/var/cache/sodeda sodeda-era5
#   docker run --rm --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined sodeda-era5 sodeda-mount --foreground /mnt/era5
# scripts/check-dockerfile runs the build steps outside Docker and checks the runtime libraries.

# Base images by fully qualified name: podman (Debian's registries settings) refuses short names.

# --- build: the Rust toolchain this project is tested with, and the NetCDF headers
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetcdf-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins

# --- runtime: Debian 12 slim, the NetCDF runtime library, CA certificates for https/gs sources
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetcdf19 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sodeda-era5 /src/target/release/sodeda-mount /usr/local/bin/
RUN ln -s /usr/local/bin/sodeda-mount /sbin/mount.sodeda \
 && mkdir -p /var/cache/sodeda /etc/sodeda /mnt/era5 \
 && printf '%s\n' '{"name": "zurich", "time": {"start": "2023-01-01T11:00", "end": "2023-01-01T11:59"}, "latitude": {"start": 48, "end": 47}, "longitude": {"start": 8, "end": 9}, "variable": ["2m_temperature"]}' \
    > /etc/sodeda/deskriptors.jsonl
ENV LOCAL_CACHE=/var/cache/sodeda \
    SODEDA_DESKRIPTORS=/etc/sodeda/deskriptors.jsonl \
    SODEDA_DASHBOARD_HOST=0.0.0.0 \
    SODEDA_DASHBOARD_PORT=7860
VOLUME ["/var/cache/sodeda"]
EXPOSE 7860
CMD ["sodeda-era5", "dashboard"]
