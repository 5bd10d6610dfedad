//! The file system's inodes, named by their place in the tree: access is
//! decided by the path a node stands for (which view, which document),
//! never by the pid of a request (a thread id, and racy).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The view a node belongs to: `""` is the host's (every document, every
/// permission), anything else an app id (`by-app/APP_ID`).
pub type View = String;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// The mount point: `by-app` and one directory per document.
    Root,
    /// `by-app`: one directory per app.
    ByApp,
    /// `by-app/APP_ID`: the documents the app may read.
    App(String),
    /// `ID` (host view) or `by-app/APP_ID/ID`: the document's file and the
    /// view's temporary files.
    DocDir { view: View, id: String },
    /// A file in a document directory: the document itself or a temporary
    /// file made there (safe save).
    File {
        view: View,
        id: String,
        name: OsString,
    },
    /// Inside a directory document: `rel` is the path below the document
    /// directory, starting with the exported directory's own name.
    Sub {
        view: View,
        id: String,
        rel: PathBuf,
    },
}

pub const ROOT_INO: u64 = 1;
pub const BY_APP_INO: u64 = 2;

/// Inode numbers, stable for the life of the mount. Numbers are not reused
/// (the kernel's `forget` is not tracked): a node named again gets its old
/// number, so the table grows with the distinct names looked up, not with
/// the number of lookups.
#[derive(Debug)]
pub struct Inodes {
    by_node: HashMap<Node, u64>,
    nodes: HashMap<u64, Node>,
    /// Files handed out under each document directory, for invalidation.
    files: HashMap<(View, String), BTreeMap<OsString, u64>>,
    /// Nodes handed out inside each directory document, for invalidation.
    subs: HashMap<(View, String), Vec<u64>>,
    /// Inside directory documents, one number per real file (device,
    /// inode) in a view, so hard links show as one inode, as upstream.
    physical: HashMap<(View, String, u64, u64), u64>,
    physical_of: HashMap<u64, (u64, u64)>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut i = Inodes {
            by_node: HashMap::new(),
            nodes: HashMap::new(),
            files: HashMap::new(),
            subs: HashMap::new(),
            physical: HashMap::new(),
            physical_of: HashMap::new(),
            next: 3,
        };
        i.by_node.insert(Node::Root, ROOT_INO);
        i.nodes.insert(ROOT_INO, Node::Root);
        i.by_node.insert(Node::ByApp, BY_APP_INO);
        i.nodes.insert(BY_APP_INO, Node::ByApp);
        i
    }
}

impl Inodes {
    /// The number of `node`, allocated on first use.
    pub fn ino(&mut self, node: Node) -> u64 {
        if let Some(ino) = self.by_node.get(&node) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        match &node {
            Node::File { view, id, name } => {
                self.files
                    .entry((view.clone(), id.clone()))
                    .or_default()
                    .insert(name.clone(), ino);
            }
            Node::Sub { view, id, .. } => {
                self.subs
                    .entry((view.clone(), id.clone()))
                    .or_default()
                    .push(ino);
            }
            _ => {}
        }
        self.by_node.insert(node.clone(), ino);
        self.nodes.insert(ino, node);
        ino
    }

    /// The number of the node at `rel` in a directory document, whose real
    /// file is (`dev`, `ino`): the number that real file already has in
    /// this view (reached by another name: a hard link), else the path's
    /// own, unless that one belonged to another real file (replaced since).
    /// The node then resolves through `rel`, the latest name seen.
    pub fn sub_ino(&mut self, view: &str, id: &str, rel: PathBuf, dev: u64, ino: u64) -> u64 {
        let key = (view.to_owned(), id.to_owned(), dev, ino);
        let node = Node::Sub {
            view: view.to_owned(),
            id: id.to_owned(),
            rel,
        };
        if let Some(&n) = self.physical.get(&key) {
            self.by_node.insert(node.clone(), n);
            self.nodes.insert(n, node);
            return n;
        }
        if let Some(&n) = self.by_node.get(&node)
            && !self.physical_of.contains_key(&n)
        {
            self.physical.insert(key, n);
            self.physical_of.insert(n, (dev, ino));
            return n;
        }
        // A new real file at a known path, or a new path: a new number.
        self.by_node.remove(&node);
        let n = self.ino(node);
        self.physical.insert(key, n);
        self.physical_of.insert(n, (dev, ino));
        n
    }

    /// A file of a document directory renamed through us: its number goes
    /// with it to the new name, as the kernel moves its inode there, and
    /// the file it replaced loses its name (its number is never handed out
    /// again: the kernel may still hold it for an open file). Returns that
    /// replaced file's number.
    pub fn renamed(&mut self, view: &str, id: &str, from: &OsStr, to: &OsStr) -> Option<u64> {
        let file = |name: &OsStr| Node::File {
            view: view.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
        };
        let replaced = self.unlinked(view, id, to);
        if let Some(ino) = self.by_node.remove(&file(from)) {
            self.by_node.insert(file(to), ino);
            self.nodes.insert(ino, file(to));
            let names = self
                .files
                .entry((view.to_owned(), id.to_owned()))
                .or_default();
            names.remove(from);
            names.insert(to.to_owned(), ino);
        }
        replaced
    }

    /// A file of a document directory removed through us: its number no
    /// longer names anything, and the name gets a new number if made again.
    pub fn unlinked(&mut self, view: &str, id: &str, name: &OsStr) -> Option<u64> {
        let node = Node::File {
            view: view.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
        };
        let ino = self.by_node.remove(&node)?;
        self.nodes.remove(&ino);
        if let Some(names) = self.files.get_mut(&(view.to_owned(), id.to_owned())) {
            names.remove(name);
        }
        Some(ino)
    }

    /// The number of `node` if the kernel may know it.
    pub fn known(&self, node: &Node) -> Option<u64> {
        self.by_node.get(node).copied()
    }

    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// Files (name, number) handed out in one document directory.
    pub fn files_of(&self, view: &str, id: &str) -> Vec<(OsString, u64)> {
        self.files
            .get(&(view.to_owned(), id.to_owned()))
            .map(|m| m.iter().map(|(n, i)| (n.clone(), *i)).collect())
            .unwrap_or_default()
    }

    /// Nodes handed out inside one directory document.
    pub fn subs_of(&self, view: &str, id: &str) -> Vec<u64> {
        self.subs
            .get(&(view.to_owned(), id.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The document id a FUSE inode belongs to (for an fd on the mount
    /// passed back to Add), with its view.
    pub fn doc_of(&self, ino: u64) -> Option<(&str, &str, Option<&OsStr>)> {
        match self.nodes.get(&ino)? {
            Node::DocDir { view, id } => Some((view, id, None)),
            Node::File { view, id, name } => Some((view, id, Some(name))),
            Node::Sub { view, id, rel } => Some((view, id, Some(rel.as_os_str()))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_distinct() {
        let mut i = Inodes::default();
        assert_eq!(i.ino(Node::Root), ROOT_INO);
        assert_eq!(i.ino(Node::ByApp), BY_APP_INO);
        let a = i.ino(Node::DocDir {
            view: "".into(),
            id: "1".into(),
        });
        let b = i.ino(Node::DocDir {
            view: "org.example.A".into(),
            id: "1".into(),
        });
        assert_ne!(a, b);
        assert_eq!(
            i.ino(Node::DocDir {
                view: "".into(),
                id: "1".into()
            }),
            a
        );
        let f = i.ino(Node::File {
            view: "".into(),
            id: "1".into(),
            name: "x".into(),
        });
        assert_eq!(i.files_of("", "1"), [(OsString::from("x"), f)]);
        assert!(i.files_of("org.example.A", "1").is_empty());
        assert_eq!(i.doc_of(f), Some(("", "1", Some(OsStr::new("x")))));
        assert_eq!(i.doc_of(ROOT_INO), None);
    }

    #[test]
    fn a_renamed_file_keeps_its_number_and_the_replaced_one_is_gone() {
        let mut i = Inodes::default();
        let file = |name: &str| Node::File {
            view: "a".into(),
            id: "1".into(),
            name: name.into(),
        };
        let doc = i.ino(file("doc"));
        let temp = i.ino(file("doc~"));
        assert_eq!(
            i.renamed("a", "1", OsStr::new("doc~"), OsStr::new("doc")),
            Some(doc)
        );
        assert_eq!(i.known(&file("doc")), Some(temp));
        assert_eq!(i.node(temp), Some(&file("doc")));
        assert_eq!(i.node(doc), None);
        assert_eq!(i.known(&file("doc~")), None);
        assert_eq!(i.files_of("a", "1"), [(OsString::from("doc"), temp)]);
        // Made again after a removal: a new number, never the old one.
        assert_eq!(i.unlinked("a", "1", OsStr::new("doc")), Some(temp));
        let again = i.ino(file("doc"));
        assert!(again != doc && again != temp);
    }
}
