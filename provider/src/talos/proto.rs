//! Types generated from `proto/` by prost and tonic (client and server side).
//!
//! The modules mirror the proto packages, so that the generated code's `super::common::…`
//! paths resolve. `google.protobuf.Empty` is mapped to `()` by prost.
#![allow(missing_docs, clippy::all)]

/// `google.*` packages that are not prost's well-known types.
pub mod google {
    /// `google.rpc`: only `Status`.
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// `common`: `Metadata` and `Data`.
pub mod common {
    tonic::include_proto!("common");
}

/// `machine`: `MachineService`.
pub mod machine {
    tonic::include_proto!("machine");
}

/// `storage`: `StorageService`.
pub mod storage {
    tonic::include_proto!("storage");
}

/// `cosi.resource`: the resource API (`State/List`), e.g. the ExtensionStatus resources.
pub mod cosi {
    /// `cosi.resource`.
    pub mod resource {
        tonic::include_proto!("cosi.resource");
    }
}
