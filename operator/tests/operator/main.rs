//! Integration tests against real servers: etcd + kube-apiserver, Postgres, Consul and Fabio,
//! each started privately by `ftgo-testenv`. There is no kubelet, so where a test needs a
//! Deployment to become available it patches the Deployment's status the way a kubelet and the
//! Deployment controller would.

mod binary;
mod chart;
mod crd;
mod discovery;
mod images;
mod lifecycle;
mod support;
