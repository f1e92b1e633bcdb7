//! The admin endpoint: `/metrics`, `/healthz`, `/readyz`.
