//! Generates the test server's protobuf types from the `.proto` files that the `tikv-client`
//! crate ships (found in the cargo registry, or at `$TIKV_CLIENT_PROTO_DIR`), and the gRPC
//! service skeletons for only the PD and TiKV methods the test server answers: tonic answers
//! any other method with `Unimplemented`.
fn main() {
    #[cfg(feature = "server")]
    server::generate();
}

#[cfg(feature = "server")]
mod server {
    use std::path::PathBuf;
    use tonic_build::manual::{Method, Service};

    fn proto_dir() -> PathBuf {
        println!("cargo:rerun-if-env-changed=TIKV_CLIENT_PROTO_DIR");
        if let Ok(dir) = std::env::var("TIKV_CLIENT_PROTO_DIR") {
            return PathBuf::from(dir);
        }
        let cargo_home = std::env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME or CARGO_HOME")).join(".cargo"));
        let mut found: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
            .expect("cargo registry sources (set TIKV_CLIENT_PROTO_DIR)")
            .flatten()
            .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("tikv-client-0.4.")))
            .map(|p| p.join("proto"))
            .filter(|p| p.join("kvrpcpb.proto").exists())
            .collect();
        found.sort();
        found.pop().expect("tikv-client 0.4 sources with proto/ in the cargo registry (set TIKV_CLIENT_PROTO_DIR)")
    }

    fn method(name: &str, route: &str, input: &str, output: &str) -> Method {
        Method::builder()
            .name(name)
            .route_name(route)
            .input_type(input)
            .output_type(output)
            .codec_path("tonic::codec::ProstCodec")
            .build()
    }

    pub fn generate() {
        let dir = proto_dir();
        let fds = protox::compile(["pdpb.proto", "kvrpcpb.proto"], [dir.clone(), dir.join("include")])
            .expect("compile the tikv-client protos");
        prost_build::Config::new().include_file("protos.rs").compile_fds(fds).expect("generate prost types");

        let kv = |name: &str, route: &str, req: &str, resp: &str| {
            method(name, route, &format!("crate::proto::kvrpcpb::{req}"), &format!("crate::proto::kvrpcpb::{resp}"))
        };
        let tikv = Service::builder()
            .name("Tikv")
            .package("tikvpb")
            .method(kv("kv_get", "KvGet", "GetRequest", "GetResponse"))
            .method(kv("kv_batch_get", "KvBatchGet", "BatchGetRequest", "BatchGetResponse"))
            .method(kv("kv_scan", "KvScan", "ScanRequest", "ScanResponse"))
            .method(kv("kv_prewrite", "KvPrewrite", "PrewriteRequest", "PrewriteResponse"))
            .method(kv("kv_commit", "KvCommit", "CommitRequest", "CommitResponse"))
            .method(kv("kv_batch_rollback", "KvBatchRollback", "BatchRollbackRequest", "BatchRollbackResponse"))
            .method(kv("kv_pessimistic_lock", "KvPessimisticLock", "PessimisticLockRequest", "PessimisticLockResponse"))
            .method(kv(
                "kv_pessimistic_rollback",
                "KVPessimisticRollback",
                "PessimisticRollbackRequest",
                "PessimisticRollbackResponse",
            ))
            .method(kv("kv_txn_heart_beat", "KvTxnHeartBeat", "TxnHeartBeatRequest", "TxnHeartBeatResponse"))
            .method(kv("kv_check_txn_status", "KvCheckTxnStatus", "CheckTxnStatusRequest", "CheckTxnStatusResponse"))
            .method(kv("kv_resolve_lock", "KvResolveLock", "ResolveLockRequest", "ResolveLockResponse"))
            .build();
        let pd = |name: &str, route: &str, req: &str, resp: &str| {
            method(name, route, &format!("crate::proto::pdpb::{req}"), &format!("crate::proto::pdpb::{resp}"))
        };
        let tso = Method::builder()
            .name("tso")
            .route_name("Tso")
            .input_type("crate::proto::pdpb::TsoRequest")
            .output_type("crate::proto::pdpb::TsoResponse")
            .codec_path("tonic::codec::ProstCodec")
            .client_streaming()
            .server_streaming()
            .build();
        let pd = Service::builder()
            .name("PD")
            .package("pdpb")
            .method(pd("get_members", "GetMembers", "GetMembersRequest", "GetMembersResponse"))
            .method(tso)
            .method(pd("get_region", "GetRegion", "GetRegionRequest", "GetRegionResponse"))
            .method(pd("get_region_by_id", "GetRegionByID", "GetRegionByIdRequest", "GetRegionResponse"))
            .method(pd("get_store", "GetStore", "GetStoreRequest", "GetStoreResponse"))
            .build();
        tonic_build::manual::Builder::new().build_client(false).compile(&[tikv, pd]);
    }
}
