//! FTGO's protobuf contracts, generated at build time from `proto/ftgo/**.proto`.
//!
//! Packages are versioned (`ftgo.<context>.v1`) so a breaking change gets a new package instead of
//! silently changing the wire format under a running peer.

/// The encoded `FileDescriptorSet` of every FTGO proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ftgo_descriptor.bin"));

pub mod admin {
    pub mod v1 {
        tonic::include_proto!("ftgo.admin.v1");
    }
}

pub mod common {
    pub mod v1 {
        tonic::include_proto!("ftgo.common.v1");
    }
}

pub mod consumer {
    pub mod v1 {
        tonic::include_proto!("ftgo.consumer.v1");
    }
}

pub mod kitchen {
    pub mod v1 {
        tonic::include_proto!("ftgo.kitchen.v1");
    }
}

pub mod accounting {
    pub mod v1 {
        tonic::include_proto!("ftgo.accounting.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("ftgo.order.v1");

        /// The longest `GetOrderRequest.wait_timeout_ms` the Order Service accepts: part of the
        /// contract, so that the gateway refuses a longer wait before it calls.
        pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
    }
}

pub mod orchestrator {
    pub mod v1 {
        tonic::include_proto!("ftgo.orchestrator.v1");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn descriptor_set_names_every_package() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let packages: Vec<_> = set.file.iter().map(|f| f.package()).collect();
        for package in ["ftgo.common.v1", "ftgo.consumer.v1", "ftgo.kitchen.v1", "ftgo.accounting.v1", "ftgo.order.v1"]
        {
            assert!(packages.contains(&package), "{package} missing from {packages:?}");
        }
    }

    #[test]
    fn messages_know_their_fully_qualified_type_name() {
        use prost::Name;
        assert_eq!(kitchen::v1::CreateTicket::full_name(), "ftgo.kitchen.v1.CreateTicket");
    }

    #[test]
    fn money_round_trips_exactly() {
        let money = common::v1::Money { minor_units: 1234 };
        let decoded = common::v1::Money::decode(money.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, money);
    }
}
