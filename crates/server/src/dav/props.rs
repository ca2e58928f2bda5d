//! Dead properties (PROPPATCH) in the store's `dead_props` of the node, and what a WebDAV lock
//! needs beyond the store's lock (its owner XML, shared or not), kept as one dead property of
//! the locked node in a namespace of ours that clients never see or set.
//!
//! The lock's extra is written with the `since_ms` of the lock it belongs to and ignored for any
//! other, so a lock taken again (by a client, say) never shows a stale owner.

use super::fs::{fs_error, rel_path, SyncFs};
use crate::error::ApiError;
use axum::http::StatusCode;
use dav_server::davpath::DavPath;
use dav_server::fs::{DavProp, FsError, FsResult};
use syncstore_proto::{LockInfo, NodeId};
use syncstore_store::DeadProp;
use xmltree::Element;

/// The namespace of the lock's extra; PROPPATCH of it is refused, PROPFIND never shows it.
const LOCK_NAMESPACE: &str = "urn:x-syncstore:webdav-lock";
const LOCK_NAME: &str = "lock";

/// What a WebDAV lock keeps beyond the store's lock.
#[derive(Clone, Debug)]
pub(crate) struct LockExtra {
    pub(crate) shared: bool,
    /// The WebDAV locks the store's lock stands for: one, or for a shared lock one per LOCK
    /// that shares it, each with its own token.
    pub(crate) shares: Vec<Share>,
}

/// One WebDAV lock on a store's lock.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Share {
    /// Part of the token; 0 for the first.
    pub(crate) id: u32,
    pub(crate) owner: Option<Element>,
}

impl Default for LockExtra {
    /// A lock taken outside WebDAV: exclusive, one token, no owner.
    fn default() -> LockExtra {
        LockExtra {
            shared: false,
            shares: vec![Share { id: 0, owner: None }],
        }
    }
}

impl SyncFs {
    async fn node_of(&self, path: &DavPath) -> FsResult<NodeId> {
        let rel = rel_path(path)?.ok_or(FsError::Forbidden)?;
        self.entry(&rel)
            .await?
            .map(|entry| entry.node_id)
            .ok_or(FsError::NotFound)
    }

    /// The node's dead properties as clients see them (without the lock's extra).
    pub(crate) async fn node_props(&self, node_id: NodeId) -> FsResult<Vec<DeadProp>> {
        let props = self
            .state()
            .stores
            .meta
            .dead_props(self.principal().user_id, node_id)
            .await
            .map_err(store_error)?;
        Ok(props
            .into_iter()
            .filter(|prop| prop.namespace != LOCK_NAMESPACE)
            .collect())
    }

    pub(crate) async fn get_dead_props(
        &self,
        path: &DavPath,
        with_content: bool,
    ) -> FsResult<Vec<DavProp>> {
        let node_id = self.node_of(path).await?;
        Ok(self
            .node_props(node_id)
            .await?
            .into_iter()
            .map(|prop| DavProp {
                name: prop.name,
                prefix: prop.prefix,
                namespace: (!prop.namespace.is_empty()).then_some(prop.namespace),
                xml: if with_content { prop.xml } else { None },
            })
            .collect())
    }

    pub(crate) async fn get_dead_prop(&self, path: &DavPath, wanted: DavProp) -> FsResult<Vec<u8>> {
        let namespace = wanted.namespace.unwrap_or_default();
        let node_id = self.node_of(path).await?;
        self.node_props(node_id)
            .await?
            .into_iter()
            .find(|prop| prop.namespace == namespace && prop.name == wanted.name)
            .and_then(|prop| prop.xml)
            .ok_or(FsError::NotFound)
    }

    pub(crate) async fn patch_dead_props(
        &self,
        path: &DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsResult<Vec<(StatusCode, DavProp)>> {
        let node_id = self.node_of(path).await?;
        let mut answer = Vec::new();
        let mut changes = Vec::new();
        let ours = patch
            .iter()
            .any(|(_, prop)| prop.namespace.as_deref() == Some(LOCK_NAMESPACE));
        for (set, prop) in patch {
            let shown = DavProp {
                xml: None,
                ..prop.clone()
            };
            if ours {
                // All or nothing: one refused property fails the others (RFC 4918, 9.2).
                let status = if prop.namespace.as_deref() == Some(LOCK_NAMESPACE) {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::FAILED_DEPENDENCY
                };
                answer.push((status, shown));
                continue;
            }
            changes.push((
                set,
                DeadProp {
                    namespace: prop.namespace.unwrap_or_default(),
                    name: prop.name,
                    prefix: prop.prefix,
                    xml: prop.xml,
                },
            ));
            answer.push((StatusCode::OK, shown));
        }
        if !ours {
            self.state()
                .stores
                .meta
                .patch_dead_props(self.principal().user_id, node_id, changes)
                .await
                .map_err(store_error)?;
        }
        Ok(answer)
    }

    /// Gives node `to` the dead properties of `from` (a COPY), replacing its own.
    pub(crate) async fn copy_dead_props(&self, from: NodeId, to: NodeId) -> FsResult<()> {
        let props = self.node_props(from).await?;
        let meta = &self.state().stores.meta;
        let user_id = self.principal().user_id;
        meta.remove_dead_props(user_id, to)
            .await
            .map_err(store_error)?;
        if !props.is_empty() {
            let patch = props.into_iter().map(|prop| (true, prop)).collect();
            meta.patch_dead_props(user_id, to, patch)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    /// Forgets a deleted node's dead properties.
    pub(crate) async fn forget_dead_props(&self, node_id: NodeId) {
        let meta = &self.state().stores.meta;
        if let Err(err) = meta
            .remove_dead_props(self.principal().user_id, node_id)
            .await
        {
            tracing::warn!(cause = %err, "could not remove a deleted file's WebDAV properties");
        }
    }

    /// The WebDAV extra of `lock` on node `node_id`, or the default when none was kept for it.
    pub(crate) async fn lock_extra(&self, node_id: NodeId, lock: &LockInfo) -> LockExtra {
        let meta = &self.state().stores.meta;
        let Ok(props) = meta.dead_props(self.principal().user_id, node_id).await else {
            return LockExtra::default();
        };
        props
            .into_iter()
            .find(|prop| prop.namespace == LOCK_NAMESPACE && prop.name == LOCK_NAME)
            .and_then(|prop| decode_extra(prop.xml.as_deref()?, lock.since_ms))
            .unwrap_or_default()
    }

    /// Keeps the WebDAV extra of `lock` on node `node_id`.
    pub(crate) async fn keep_lock_extra(
        &self,
        node_id: NodeId,
        lock: &LockInfo,
        extra: &LockExtra,
    ) {
        let prop = DeadProp {
            namespace: LOCK_NAMESPACE.to_owned(),
            name: LOCK_NAME.to_owned(),
            prefix: None,
            xml: Some(encode_extra(lock.since_ms, extra)),
        };
        let meta = &self.state().stores.meta;
        if let Err(err) = meta
            .patch_dead_props(self.principal().user_id, node_id, vec![(true, prop)])
            .await
        {
            tracing::warn!(cause = %err, "could not keep a WebDAV lock's owner");
        }
    }
}

/// `since_ms`, a line; `shared` or `exclusive`, a line; then a line per share: its id and the
/// owner element's XML in hex (nothing when it has none).
fn encode_extra(since_ms: i64, extra: &LockExtra) -> Vec<u8> {
    let scope = if extra.shared { "shared" } else { "exclusive" };
    let mut text = format!("{since_ms}\n{scope}\n");
    for share in &extra.shares {
        let mut xml = Vec::new();
        if let Some(owner) = &share.owner {
            // dav-server names it `D:owner` without declaring `D` on it: written without a
            // prefix, in its namespace, it reads back on its own.
            let mut owner = owner.clone();
            owner.prefix = None;
            let config = xmltree::EmitterConfig::new().write_document_declaration(false);
            if owner.write_with_config(&mut xml, config).is_err() {
                tracing::warn!("could not write a WebDAV lock's owner; it is not kept");
                xml.clear();
            }
        }
        text.push_str(&format!("{} {}\n", share.id, hex::encode(xml)));
    }
    text.into_bytes()
}

fn decode_extra(bytes: &[u8], since_ms: i64) -> Option<LockExtra> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()?.parse::<i64>().ok()? != since_ms {
        return None;
    }
    let shared = lines.next()? == "shared";
    let mut shares = Vec::new();
    for line in lines {
        let (id, xml) = line.split_once(' ')?;
        let owner = hex::decode(xml)
            .ok()
            .filter(|xml| !xml.is_empty())
            .and_then(|xml| Element::parse(xml.as_slice()).ok())
            .map(|mut owner| {
                owner.prefix = Some("D".to_owned());
                owner
            });
        shares.push(Share {
            id: id.parse().ok()?,
            owner,
        });
    }
    if shares.is_empty() {
        return None;
    }
    Some(LockExtra { shared, shares })
}

fn store_error(err: syncstore_store::StoreError) -> FsError {
    fs_error(&ApiError::from(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_extra_reads_back_only_for_its_lock() {
        // The owner as dav-server hands it over: taken from the LOCK body, named `D:owner`.
        let lockinfo = Element::parse(
            r#"<lockinfo xmlns="DAV:"><owner><href>litmus
test suite</href></owner></lockinfo>"#
                .as_bytes(),
        )
        .unwrap();
        let mut owner = lockinfo.get_child("owner").unwrap().clone();
        owner.prefix = Some("D".to_owned());
        let extra = LockExtra {
            shared: true,
            shares: vec![
                Share {
                    id: 0,
                    owner: Some(owner.clone()),
                },
                Share { id: 3, owner: None },
            ],
        };
        let bytes = encode_extra(42, &extra);
        let back = decode_extra(&bytes, 42).unwrap();
        assert!(back.shared);
        assert_eq!(back.shares, extra.shares);
        assert!(decode_extra(&bytes, 43).is_none());
        let plain = decode_extra(&encode_extra(7, &LockExtra::default()), 7).unwrap();
        assert!(!plain.shared);
        assert_eq!(plain.shares, LockExtra::default().shares);
    }
}
