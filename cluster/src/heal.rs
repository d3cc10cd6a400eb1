//! The partition heal planner: after a network partition heals, which nodes
//! keep their state (the winners) and which restart their cluster subtree
//! and rejoin them (the losers).
//!
//! Every reachable node reports a [`NodeView`]: its name, its incarnation
//! (when its process started, unix ms) and the nodes it stayed connected to
//! during the split. [`plan`] turns the views into a [`HealPlan`]. It is a
//! pure function of the set of views: every node that is given the same
//! views computes the same plan, whatever their order.
//!
//! The rules, in order:
//!
//! 1. **Participants.** The participants are the distinct `node`s of the
//!    views. When a node has several views, the one with the larger
//!    `incarnation` counts; at equal incarnations, the one whose `sees` is
//!    larger (the sorted name lists compared lexicographically). A name in
//!    `sees` that has no view of its own is ignored: that node is not
//!    reachable now and takes no part. A node always sees itself, whether
//!    its `sees` lists it or not.
//! 2. **Age.** A node is older than another when its `(incarnation, name)`
//!    is smaller: the smaller incarnation (running longer), and at equal
//!    incarnations the smaller name. The oldest member of a set of nodes is
//!    its smallest by that order.
//! 3. **Connections.** Two participants are connected when each one's
//!    `sees` lists the other. One-way visibility is no connection. A clique
//!    is a set of participants pairwise connected (a single node is one).
//! 4. **Order of cliques.** Clique A comes before clique B when A has more
//!    members; at equal sizes, when A's members listed oldest first come
//!    before B's, compared member by member by age: the clique holding the
//!    oldest member comes first, and if both hold it, the next member
//!    decides, and so on.
//! 5. **Partition.** The participants are split into cliques greedily:
//!    among the participants not yet placed, take the first clique by the
//!    order of rule 4 (a maximum clique), and repeat until every participant
//!    is placed. The first clique taken is the winner; every participant
//!    outside it is a loser.
//!
//! So the largest clique wins, and a tie goes to the clique holding the node
//! running longest: in a 2-node split the older node wins, in a 3-way split
//! of single nodes the oldest node wins. When there is a single clique
//! (everybody stayed connected) the plan is a no-op: nobody restarts.
//!
//! Up to [`EXACT_LIMIT`] participants the maximum clique is exact
//! (Bron–Kerbosch with pivoting). Above it, so the planner stays fast, each
//! clique is found greedily instead: from every remaining participant, add
//! the oldest remaining participant connected to all members so far, until
//! none is left; of these cliques, keep the first by the order of rule 4.
//! That clique may then be smaller than a maximum one, but the plan is still
//! deterministic, the cliques are still cliques and still cover everybody.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Up to this many participants the winning clique is a maximum clique
/// (exact search); above it a greedy clique is used (see the module doc).
pub const EXACT_LIMIT: usize = 32;

/// What one node reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub node: String,
    /// When that node's process started (unix ms): smaller = running longer.
    pub incarnation: u64,
    /// The nodes it saw during the split (it may or may not list itself;
    /// treat it as seeing itself).
    pub sees: BTreeSet<String>,
}

/// Who keeps running and who restarts its cluster subtree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealPlan {
    /// Every clique, the winner first, then by the same order rule;
    /// disjoint, covering every participant.
    pub cliques: Vec<BTreeSet<String>>,
    /// The winning clique (empty only when there are no participants).
    pub winners: BTreeSet<String>,
    /// Every participant not in winners: they restart their cluster subtree.
    pub losers: BTreeSet<String>,
}

impl HealPlan {
    /// One clique (or none): nobody restarts.
    pub fn is_noop(&self) -> bool {
        self.cliques.len() <= 1
    }

    /// Whether `node` is a loser, which restarts its cluster subtree.
    pub fn restarts(&self, node: &str) -> bool {
        self.losers.contains(node)
    }
}

/// The heal plan for these views (rules in the module doc). Independent of
/// the order of `views`; empty input gives an empty plan.
pub fn plan(views: &[NodeView]) -> HealPlan {
    let nodes = participants(views);
    let n = nodes.len();
    let adj: Vec<Vec<bool>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    i != j
                        && nodes[i].sees.contains(&nodes[j].node)
                        && nodes[j].sees.contains(&nodes[i].node)
                })
                .collect()
        })
        .collect();

    // Indices are age ranks (0 = oldest), so comparing sorted index lists
    // is comparing by age.
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut cliques = Vec::new();
    while !remaining.is_empty() {
        let clique = if n <= EXACT_LIMIT {
            exact_clique(&adj, &remaining)
        } else {
            greedy_clique(&adj, &remaining)
        };
        // Both searches return at least one remaining node, so this ends.
        remaining.retain(|i| clique.binary_search(i).is_err());
        cliques.push(clique);
    }

    let cliques: Vec<BTreeSet<String>> = cliques
        .iter()
        .map(|c| c.iter().map(|&i| nodes[i].node.clone()).collect())
        .collect();
    let winners = cliques.first().cloned().unwrap_or_default();
    let losers = nodes
        .iter()
        .filter(|v| !winners.contains(&v.node))
        .map(|v| v.node.clone())
        .collect();
    HealPlan {
        cliques,
        winners,
        losers,
    }
}

/// One view per node (rule 1), oldest first (rule 2).
fn participants(views: &[NodeView]) -> Vec<&NodeView> {
    let mut by_node: BTreeMap<&str, &NodeView> = BTreeMap::new();
    for v in views {
        let keep = match by_node.get(v.node.as_str()) {
            Some(cur) => (v.incarnation, &v.sees) > (cur.incarnation, &cur.sees),
            None => true,
        };
        if keep {
            by_node.insert(&v.node, v);
        }
    }
    let mut nodes: Vec<&NodeView> = by_node.into_values().collect();
    nodes.sort_by(|a, b| (a.incarnation, &a.node).cmp(&(b.incarnation, &b.node)));
    nodes
}

/// Whether sorted clique `a` comes before sorted clique `b` (rule 4).
fn before(a: &[usize], b: &[usize]) -> bool {
    a.len() > b.len() || (a.len() == b.len() && a < b)
}

/// The indices set in `mask`, ascending.
fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask >> i & 1 == 1)
}

/// The first clique by rule 4 among `remaining` (sorted, non-empty),
/// exactly. Only for at most [`EXACT_LIMIT`] nodes in all.
fn exact_clique(adj: &[Vec<bool>], remaining: &[usize]) -> Vec<usize> {
    let masks: Vec<u64> = adj
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .filter(|(_, &c)| c)
                .fold(0, |m, (j, _)| m | 1 << j)
        })
        .collect();
    let p = remaining.iter().fold(0u64, |m, &i| m | 1 << i);
    let mut best: Vec<usize> = remaining.iter().take(1).copied().collect();
    bron_kerbosch(0, p, 0, &masks, &mut best);
    best
}

/// Bron–Kerbosch with pivoting over bitmasks: `r` the clique so far, `p`
/// the candidates, `x` the excluded. Keeps in `best` the first maximal
/// clique by rule 4 (a maximum clique is maximal).
fn bron_kerbosch(r: u64, mut p: u64, mut x: u64, adj: &[u64], best: &mut Vec<usize>) {
    if p == 0 {
        if x == 0 {
            let clique: Vec<usize> = bits(r).collect();
            if before(&clique, best) {
                *best = clique;
            }
        }
        return;
    }
    // Nothing below can reach the size of `best`.
    if ((r | p).count_ones() as usize) < best.len() {
        return;
    }
    let pivot = bits(p | x)
        .map(|u| adj[u])
        .max_by_key(|m| (p & m).count_ones())
        .unwrap_or(0);
    for v in bits(p & !pivot) {
        bron_kerbosch(r | 1 << v, p & adj[v], x & adj[v], adj, best);
        p &= !(1 << v);
        x |= 1 << v;
    }
}

/// A clique among `remaining` (sorted, non-empty), greedily (module doc).
fn greedy_clique(adj: &[Vec<bool>], remaining: &[usize]) -> Vec<usize> {
    let mut best: Vec<usize> = remaining.iter().take(1).copied().collect();
    for &start in remaining {
        let mut clique = vec![start];
        let mut candidates: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&j| adj[start][j])
            .collect();
        while let Some(&next) = candidates.first() {
            clique.push(next);
            candidates.retain(|&j| adj[next][j]);
        }
        clique.sort_unstable();
        if before(&clique, &best) {
            best = clique;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(node: &str, incarnation: u64, sees: &[&str]) -> NodeView {
        NodeView {
            node: node.to_string(),
            incarnation,
            sees: sees.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn empty_input_gives_empty_plan() {
        let p = plan(&[]);
        assert!(p.cliques.is_empty());
        assert!(p.winners.is_empty());
        assert!(p.losers.is_empty());
        assert!(p.is_noop());
    }

    #[test]
    fn full_mesh_is_noop() {
        let all = ["a", "b", "c"];
        let p = plan(&[view("a", 3, &all), view("b", 1, &all), view("c", 2, &all)]);
        assert_eq!(p.cliques, vec![set(&all)]);
        assert_eq!(p.winners, set(&all));
        assert!(p.losers.is_empty());
        assert!(p.is_noop());
        assert!(!p.restarts("a"));
    }

    #[test]
    fn clean_split_of_three_the_pair_wins() {
        // c is the oldest but alone.
        let p = plan(&[
            view("a", 5, &["a", "b"]),
            view("b", 6, &["a", "b"]),
            view("c", 1, &["c"]),
        ]);
        assert_eq!(p.cliques, vec![set(&["a", "b"]), set(&["c"])]);
        assert_eq!(p.winners, set(&["a", "b"]));
        assert_eq!(p.losers, set(&["c"]));
        assert!(!p.is_noop());
        assert!(p.restarts("c"));
        assert!(!p.restarts("a"));
    }

    #[test]
    fn two_node_split_older_wins() {
        let p = plan(&[view("a", 20, &["a"]), view("b", 10, &["b"])]);
        assert_eq!(p.winners, set(&["b"]));
        assert_eq!(p.losers, set(&["a"]));
        assert_eq!(p.cliques, vec![set(&["b"]), set(&["a"])]);
    }

    #[test]
    fn two_node_split_equal_incarnation_smaller_name_wins() {
        let p = plan(&[view("b", 10, &[]), view("a", 10, &[])]);
        assert_eq!(p.winners, set(&["a"]));
        assert_eq!(p.losers, set(&["b"]));
    }

    #[test]
    fn three_way_split_oldest_wins() {
        let p = plan(&[
            view("a", 30, &["a"]),
            view("b", 10, &["b"]),
            view("c", 20, &["c"]),
        ]);
        assert_eq!(p.winners, set(&["b"]));
        assert_eq!(p.losers, set(&["a", "c"]));
        assert_eq!(p.cliques, vec![set(&["b"]), set(&["c"]), set(&["a"])]);
    }

    #[test]
    fn one_way_visibility_is_not_a_connection() {
        // a sees b, b does not see a.
        let p = plan(&[view("a", 1, &["a", "b"]), view("b", 2, &["b"])]);
        assert_eq!(p.cliques, vec![set(&["a"]), set(&["b"])]);
        assert_eq!(p.winners, set(&["a"]));
        assert!(p.restarts("b"));
    }

    #[test]
    fn flapping_link_in_triangle_goes_by_age() {
        // a-b broken, c sees both: {a,c} or {b,c}, whichever holds the older.
        let triangle = |ia, ib| {
            plan(&[
                view("a", ia, &["a", "c"]),
                view("b", ib, &["b", "c"]),
                view("c", 5, &["a", "b", "c"]),
            ])
        };
        let p = triangle(1, 2);
        assert_eq!(p.cliques, vec![set(&["a", "c"]), set(&["b"])]);
        assert_eq!(p.losers, set(&["b"]));
        let p = triangle(2, 1);
        assert_eq!(p.cliques, vec![set(&["b", "c"]), set(&["a"])]);
        assert_eq!(p.losers, set(&["a"]));
        // c the oldest: both hold it, the next oldest member decides.
        let p = plan(&[
            view("a", 3, &["a", "c"]),
            view("b", 2, &["b", "c"]),
            view("c", 1, &["a", "b", "c"]),
        ]);
        assert_eq!(p.winners, set(&["b", "c"]));
        assert_eq!(p.losers, set(&["a"]));
    }

    #[test]
    fn five_nodes_split_three_two() {
        let big = ["a", "b", "c"];
        let small = ["d", "e"];
        let p = plan(&[
            view("d", 1, &small),
            view("e", 2, &small),
            view("a", 3, &big),
            view("b", 4, &big),
            view("c", 5, &big),
        ]);
        assert_eq!(p.cliques, vec![set(&big), set(&small)]);
        assert_eq!(p.winners, set(&big));
        assert_eq!(p.losers, set(&small));
        assert!(p.restarts("d") && p.restarts("e"));
    }

    #[test]
    fn duplicate_views_newest_incarnation_counts() {
        let stale = view("a", 1, &["a", "b"]);
        let fresh = view("a", 7, &["a"]);
        let b = view("b", 3, &["a", "b"]);
        let p1 = plan(&[stale.clone(), fresh.clone(), b.clone()]);
        let p2 = plan(&[b.clone(), fresh.clone(), stale.clone()]);
        assert_eq!(p1, p2);
        // The fresh view of a does not see b, and a is now younger than b.
        assert_eq!(p1.cliques, vec![set(&["b"]), set(&["a"])]);
        // Equal incarnations: the larger `sees` counts, whatever the order.
        let small = view("a", 1, &["a"]);
        let large = view("a", 1, &["a", "b"]);
        let b = view("b", 3, &["a", "b"]);
        let p1 = plan(&[small.clone(), large.clone(), b.clone()]);
        let p2 = plan(&[large, small, b]);
        assert_eq!(p1, p2);
        assert!(p1.is_noop());
    }

    #[test]
    fn unknown_nodes_in_sees_are_ignored() {
        let p = plan(&[
            view("a", 2, &["a", "b", "ghost"]),
            view("b", 1, &["a", "b", "ghost", "other"]),
        ]);
        assert_eq!(p.cliques, vec![set(&["a", "b"])]);
        assert!(p.is_noop());
        assert!(!p.restarts("ghost"));
    }

    #[test]
    fn above_exact_limit_greedy_still_plans() {
        let names: Vec<String> = (0..40).map(|i| format!("n{i:02}")).collect();
        let (big, small) = names.split_at(25);
        let group = |g: &[String]| g.iter().cloned().collect::<BTreeSet<String>>();
        let views: Vec<NodeView> = names
            .iter()
            .enumerate()
            .map(|(i, name)| NodeView {
                node: name.clone(),
                incarnation: 100 - i as u64, // the small side is older
                sees: group(if i < 25 { big } else { small }),
            })
            .collect();
        let p = plan(&views);
        assert_eq!(p.winners, group(big));
        assert_eq!(p.losers, group(small));
        assert_eq!(p.cliques, vec![group(big), group(small)]);
        let mesh: Vec<NodeView> = names
            .iter()
            .map(|name| NodeView {
                node: name.clone(),
                incarnation: 1,
                sees: group(&names),
            })
            .collect();
        assert!(plan(&mesh).is_noop());
    }

    /// Views of `n` nodes named `n0`, `n1`, ...: random incarnations (with
    /// collisions), random visibility (symmetric or not, self or not),
    /// sometimes a `ghost` without a view, sometimes duplicate views.
    fn views_strategy(
        nodes: std::ops::RangeInclusive<usize>,
    ) -> impl Strategy<Value = Vec<NodeView>> {
        nodes
            .prop_flat_map(|n| {
                (
                    prop::collection::vec(0u64..4, n),
                    prop::collection::vec(prop::collection::vec(any::<bool>(), n), n),
                    any::<bool>(),
                    any::<bool>(),
                    prop::collection::vec(
                        (
                            0..n.max(1),
                            0u64..4,
                            prop::collection::vec(any::<bool>(), n),
                        ),
                        0..3,
                    ),
                )
            })
            .prop_map(|(incs, see, symmetric, ghost, dups)| {
                let n = incs.len();
                let name = |i: usize| format!("n{i}");
                let sees_of = |row: &dyn Fn(usize) -> bool| {
                    let mut s: BTreeSet<String> = (0..n).filter(|&j| row(j)).map(name).collect();
                    if ghost {
                        s.insert("ghost".to_string());
                    }
                    s
                };
                let mut views: Vec<NodeView> = (0..n)
                    .map(|i| NodeView {
                        node: name(i),
                        incarnation: incs[i],
                        sees: sees_of(&|j| {
                            if symmetric {
                                see[i.min(j)][i.max(j)]
                            } else {
                                see[i][j]
                            }
                        }),
                    })
                    .collect();
                if n > 0 {
                    for (i, inc, row) in dups {
                        views.push(NodeView {
                            node: name(i),
                            incarnation: inc,
                            sees: sees_of(&|j| row[j]),
                        });
                    }
                }
                views
            })
    }

    /// The view that counts for each node (rule 1), by name.
    fn effective(views: &[NodeView]) -> Vec<NodeView> {
        let mut by_node: BTreeMap<String, NodeView> = BTreeMap::new();
        for v in views {
            let e = by_node.entry(v.node.clone()).or_insert_with(|| v.clone());
            if (v.incarnation, &v.sees) > (e.incarnation, &e.sees) {
                *e = v.clone();
            }
        }
        by_node.into_values().collect()
    }

    fn connected(a: &NodeView, b: &NodeView) -> bool {
        a.sees.contains(&b.node) && b.sees.contains(&a.node)
    }

    fn is_clique(members: &BTreeSet<String>, nodes: &[NodeView]) -> bool {
        let vs: Vec<&NodeView> = nodes.iter().filter(|v| members.contains(&v.node)).collect();
        vs.len() == members.len()
            && vs
                .iter()
                .enumerate()
                .all(|(i, a)| vs[i + 1..].iter().all(|b| connected(a, b)))
    }

    /// Properties (2), (3) and (6).
    fn check_shape(p: &HealPlan, nodes: &[NodeView]) -> Result<(), TestCaseError> {
        let all: BTreeSet<String> = nodes.iter().map(|v| v.node.clone()).collect();
        prop_assert_eq!(p.winners.is_empty(), all.is_empty());
        prop_assert_eq!(
            p.cliques.first().cloned().unwrap_or_default(),
            p.winners.clone()
        );
        prop_assert!(p.winners.is_disjoint(&p.losers));
        prop_assert_eq!(&p.winners | &p.losers, all.clone());
        let mut covered = BTreeSet::new();
        for c in &p.cliques {
            prop_assert!(!c.is_empty());
            prop_assert!(c.is_disjoint(&covered));
            prop_assert!(is_clique(c, nodes));
            covered.extend(c.iter().cloned());
        }
        prop_assert_eq!(covered, all.clone());
        for n in &all {
            prop_assert_eq!(p.restarts(n), !p.winners.contains(n));
        }
        prop_assert_eq!(p.is_noop(), p.cliques.len() == 1 || all.is_empty());
        prop_assert_eq!(p.is_noop(), p.losers.is_empty());
        Ok(())
    }

    fn with_shuffle(
        nodes: std::ops::RangeInclusive<usize>,
    ) -> impl Strategy<Value = (Vec<NodeView>, Vec<NodeView>)> {
        views_strategy(nodes).prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    }

    proptest! {
        /// (1) Every node computes the same plan from the same views.
        #[test]
        fn prop_input_order_does_not_matter((views, shuffled) in with_shuffle(0..=9)) {
            prop_assert_eq!(plan(&views), plan(&shuffled));
        }

        /// (2), (3), (6): one winner set, a partition into real cliques,
        /// everybody ends in one cluster.
        #[test]
        fn prop_plan_partitions_into_cliques(views in views_strategy(0..=9)) {
            check_shape(&plan(&views), &effective(&views))?;
        }

        /// (4), (5): the winner is a maximum clique, and holds the oldest
        /// member of all maximum cliques (brute force over subsets).
        #[test]
        fn prop_winner_is_oldest_maximum_clique(views in views_strategy(0..=9)) {
            let nodes = effective(&views);
            let p = plan(&views);
            let n = nodes.len();
            let mut max_cliques: Vec<BTreeSet<String>> = Vec::new();
            for mask in 0u32..1 << n {
                let members: BTreeSet<String> = (0..n)
                    .filter(|i| mask >> i & 1 == 1)
                    .map(|i| nodes[i].node.clone())
                    .collect();
                if !is_clique(&members, &nodes) {
                    continue;
                }
                match max_cliques.first().map(BTreeSet::len) {
                    Some(len) if members.len() < len => {}
                    Some(len) if members.len() == len => max_cliques.push(members),
                    _ => max_cliques = vec![members],
                }
            }
            let size = max_cliques.first().map_or(0, BTreeSet::len);
            prop_assert_eq!(p.winners.len(), size);
            prop_assert!(is_clique(&p.winners, &nodes));
            let oldest = nodes
                .iter()
                .filter(|v| max_cliques.iter().any(|c| c.contains(&v.node)))
                .min_by(|a, b| (a.incarnation, &a.node).cmp(&(b.incarnation, &b.node)));
            if let Some(oldest) = oldest {
                prop_assert!(p.winners.contains(&oldest.node));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Above [`EXACT_LIMIT`] (greedy): still order-independent and
        /// still a partition into cliques.
        #[test]
        fn prop_greedy_plan_is_deterministic_and_sound(
            (views, shuffled) in with_shuffle(EXACT_LIMIT + 1..=EXACT_LIMIT + 8)
        ) {
            let p = plan(&views);
            prop_assert_eq!(&p, &plan(&shuffled));
            check_shape(&p, &effective(&views))?;
        }
    }
}
