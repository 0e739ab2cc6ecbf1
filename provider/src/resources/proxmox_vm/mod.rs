//! `castle_proxmox_vm`: a VM cloned from a template, with static networking.

use std::sync::Arc;

use async_trait::async_trait;
use tf_provider::schema::{Block, Description, Schema};
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::provider::ProviderData;

/// The resource.
pub struct ProxmoxVmResource {
    #[allow(dead_code)]
    data: Arc<ProviderData>,
}

impl ProxmoxVmResource {
    /// A resource bound to the provider's clients.
    pub fn new(data: Arc<ProviderData>) -> Self {
        Self { data }
    }
}

#[async_trait]
impl Resource for ProxmoxVmResource {
    type State<'a> = ValueEmpty;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema { version: 1, block: Block { description: Description::plain("todo"), ..Default::default() } })
    }
    async fn read<'a>(&self, _d: &mut Diagnostics, s: Self::State<'a>, p: Self::PrivateState<'a>, _m: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> { Some((s, p)) }
    async fn plan_create<'a>(&self, _d: &mut Diagnostics, s: Self::State<'a>, _c: Self::State<'a>, _m: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> { Some((s, Default::default())) }
    async fn plan_update<'a>(&self, _d: &mut Diagnostics, _p: Self::State<'a>, s: Self::State<'a>, _c: Self::State<'a>, pp: Self::PrivateState<'a>, _m: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> { Some((s, pp, vec![])) }
    async fn plan_destroy<'a>(&self, _d: &mut Diagnostics, _s: Self::State<'a>, p: Self::PrivateState<'a>, _m: Self::ProviderMetaState<'a>) -> Option<Self::PrivateState<'a>> { Some(p) }
    async fn create<'a>(&self, _d: &mut Diagnostics, s: Self::State<'a>, _c: Self::State<'a>, p: Self::PrivateState<'a>, _m: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> { Some((s, p)) }
    async fn update<'a>(&self, _d: &mut Diagnostics, _p: Self::State<'a>, s: Self::State<'a>, _c: Self::State<'a>, p: Self::PrivateState<'a>, _m: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> { Some((s, p)) }
    async fn destroy<'a>(&self, _d: &mut Diagnostics, _s: Self::State<'a>, _p: Self::PrivateState<'a>, _m: Self::ProviderMetaState<'a>) -> Option<()> { Some(()) }
}
