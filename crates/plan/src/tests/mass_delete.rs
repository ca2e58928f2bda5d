//! The mass-delete interlock (crate docs, "The mass-delete interlock"; issue 14): one test per
//! rule, in the three-tree form of [`super::fixture`].
//!
//! The limits here are small (more than 50 % and more than 2 files) so the trees stay short;
//! the client's default is more than 50 % and more than 100 files.

use super::fixture::Fixture;
use expect_test::expect;

/// Four files, synced on both sides.
const FOUR: &str = "a file h1\nb file h2\nc file h3\nz file h9";

#[test]
fn mass_delete_over_the_limit_holds_every_local_delete_and_says_so() {
    // Three of four files deleted on the server: more than 50 % and more than 2.
    Fixture::new(FOUR, FOUR, "z file h9")
        .mass_delete(50, 2)
        .check(expect![[r#"
            blocked *: mass delete held (3 of 4 files)
        "#]]);
}

#[test]
fn mass_delete_allowed_deletes_what_the_remote_deleted() {
    // The same trees with the interlock off (the user allowed it): row 7 for each.
    Fixture::new(FOUR, FOUR, "z file h9").check(expect![[r#"
        delete-local a if=h1
        delete-local b if=h2
        delete-local c if=h3
    "#]]);
}

#[test]
fn mass_delete_at_the_limit_is_not_over_it() {
    // Two of four is 50 %, not more: deleted.
    Fixture::new(FOUR, FOUR, "c file h3\nz file h9")
        .mass_delete(50, 1)
        .check(expect![[r#"
            delete-local a if=h1
            delete-local b if=h2
        "#]]);
    // Three files is not more than three.
    Fixture::new(FOUR, FOUR, "z file h9")
        .mass_delete(50, 3)
        .check(expect![[r#"
            delete-local a if=h1
            delete-local b if=h2
            delete-local c if=h3
        "#]]);
}

#[test]
fn mass_delete_held_lets_everything_else_go() {
    // Remote: a, b, c, d deleted (4 of 7 files), m modified, n created. Local: u modified,
    // l deleted, k created.
    let base = "a file h1\nb file h2\nc file h3\nd file h4\nm file m1\nu file u1\nl file l1";
    let local = "a file h1\nb file h2\nc file h3\nd file h4\nm file m1\nu file u2\nk file k1";
    let remote = "m file m2 rev=2\nn file n1\nu file u1\nl file l1";
    Fixture::new(base, local, remote)
        .mass_delete(50, 2)
        .check(expect![[r#"
            upload k k1 if-absent
            download m m2 id=7 rev=2 if-local=m1
            download n n1 id=8 rev=1 if-local=absent
            upload u u2 if-rev=1
            delete-remote l rev=1
            blocked *: mass delete held (4 of 7 files)
        "#]]);
}

#[test]
fn mass_delete_held_keeps_the_directories_of_held_files() {
    // The server lost the directory d and the empty directory e; d/new is new here.
    let base = "d dir\nd/a file h1\nd/b file h2\nd/c file h3\ne dir\nz file h9";
    let local = "d dir\nd/a file h1\nd/b file h2\nd/c file h3\nd/new file n1\ne dir\nz file h9";
    Fixture::new(base, local, "z file h9")
        .mass_delete(50, 2)
        .check(expect![[r#"
            mkdir-remote d
            upload d/new n1 if-absent
            blocked *: mass delete held (3 of 4 files)
        "#]]);
}

#[test]
fn mass_delete_counts_the_whole_folder_not_the_focus() {
    // A focus holding three files, all deleted remotely, of a folder of 100 files: 3 %.
    Fixture::new(FOUR, FOUR, "z file h9")
        .focus()
        .mass_delete_of(50, 2, 100)
        .check(expect![[r#"
            delete-local a if=h1
            delete-local b if=h2
            delete-local c if=h3
        "#]]);
    // The same focus of a folder of five files: 60 %.
    Fixture::new(FOUR, FOUR, "z file h9")
        .focus()
        .mass_delete_of(50, 2, 5)
        .check(expect![[r#"
            blocked *: mass delete held (3 of 5 files)
        "#]]);
}

#[test]
fn mass_delete_hold_in_force_holds_any_remote_delete() {
    // One file of four is far under the limit, but a hold is in force: the files the other
    // device wrote since (an encrypted copy of each) do not dilute it away.
    Fixture::new(FOUR, FOUR, "b file h2\nc file h3\nz file h9")
        .mass_delete(50, 2)
        .holding()
        .check(expect![[r#"
            blocked *: mass delete held (1 of 4 files)
        "#]]);
}

#[test]
fn mass_delete_hold_ends_when_nothing_is_left_to_delete() {
    // The files were restored on the server (as new nodes): nothing is deleted, nothing held.
    let restored = "a file h1 id=11\nb file h2 id=12\nc file h3 id=13\nz file h9";
    Fixture::new(FOUR, FOUR, restored)
        .mass_delete(50, 2)
        .holding()
        .check(expect![[r#"
            record-base a file h1 id=11 rev=1 size=0 mtime=0 ino=101
            record-base b file h2 id=12 rev=1 size=0 mtime=0 ino=102
            record-base c file h3 id=13 rev=1 size=0 mtime=0 ino=103
        "#]]);
}

#[test]
fn mass_delete_local_deletes_are_uploaded_not_held() {
    // The user deleted three of four files here: that is their intent, sent to the server.
    Fixture::new(FOUR, "z file h9", FOUR)
        .mass_delete(50, 2)
        .check(expect![[r#"
            delete-remote a rev=1
            delete-remote b rev=1
            delete-remote c rev=1
        "#]]);
}

#[test]
fn mass_delete_an_edit_that_beats_a_delete_is_not_counted() {
    // a and b were edited here (row 10: uploaded), so only c is deleted: one file.
    Fixture::new(
        FOUR,
        "a file e1\nb file e2\nc file h3\nz file h9",
        "z file h9",
    )
    .mass_delete(50, 0)
    .check(expect![[r#"
            delete-local c if=h3
            upload a e1 if-absent
            upload b e2 if-absent
        "#]]);
}

#[test]
fn mass_delete_type_changes_are_not_deletions() {
    // Row 19 three times: each file became a directory on the server.
    Fixture::new(
        FOUR,
        FOUR,
        "a dir id=11\nb dir id=12\nc dir id=13\nz file h9",
    )
    .mass_delete(50, 2)
    .check(expect![[r#"
            delete-local a if=h1
            delete-local b if=h2
            delete-local c if=h3
            mkdir-local a id=11 rev=1
            mkdir-local b id=12 rev=1
            mkdir-local c id=13 rev=1
        "#]]);
}

#[test]
fn mass_delete_a_directory_the_remote_turned_into_a_file_is_not_held() {
    // Row 19: its files go with the type change. Held, they would keep the directory here and
    // turn the change into a conflict (found by the property test).
    let tree = "b dir\nb/w file h3\nb/x file h1\nb/y file h2\nz file h9";
    Fixture::new(tree, tree, "b file h5 id=11\nz file h9")
        .mass_delete(50, 2)
        .check(expect![[r#"
            delete-local b/w if=h3
            delete-local b/x if=h1
            delete-local b/y if=h2
            rmdir-local b
            download b h5 id=11 rev=1 if-local=absent
        "#]]);
}

/// The files `from..to` of a folder, named `f000` and so on, as fixture lines.
fn files(from: usize, to: usize) -> String {
    (from..to)
        .map(|n| format!("f{n:03} file h{n}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn mass_delete_in_pieces_counts_the_recent_deletions_too() {
    // A folder of 200 files loses 40 on the server in each of three commits, planned one after
    // the other at the client's default limit (more than 50 % and more than 100 files).
    let plan_piece = |piece: usize, recently_deleted: usize| {
        let left = files(40 * piece, 200);
        Fixture::new(&left, &left, &files(40 * (piece + 1), 200))
            .mass_delete(50, 100)
            .recently_deleted(recently_deleted)
    };
    // 40 of 200, then 40 + 40 of 200: under the limit, deleted, and named as counted.
    for (piece, recently_deleted) in [(0, 0), (1, 40)] {
        let plan = plan_piece(piece, recently_deleted).plan();
        assert!(plan.blocked.is_empty(), "{plan:?}");
        assert_eq!(plan.ops.len(), 40);
        let deleted: Vec<_> = plan.ops.iter().map(counted_path).collect();
        assert_eq!(
            deleted,
            plan.counted_deletes
                .iter()
                .cloned()
                .map(Some)
                .collect::<Vec<_>>()
        );
    }
    // 40 + 80 of 200 is more than 100 and more than 50 %: this plan's 40 are held.
    plan_piece(2, 80).check(expect![[r#"
        blocked *: mass delete held (120 of 200 files)
    "#]]);
    let held = plan_piece(2, 80).plan();
    assert!(held.counted_deletes.is_empty());
    // Judged on its own (nothing recent), the third piece is 40 of 120: deleted.
    let alone = plan_piece(2, 0).plan();
    assert!(alone.blocked.is_empty());
    assert_eq!(alone.counted_deletes.len(), 40);
}

#[test]
fn mass_delete_recent_deletions_alone_hold_nothing() {
    // Many recent deletions, but this plan deletes nothing for the remote: nothing is held.
    Fixture::new(FOUR, FOUR, FOUR)
        .mass_delete(50, 2)
        .recently_deleted(100)
        .check(expect![[r#"
            nothing
        "#]]);
}

#[test]
fn mass_delete_counted_deletes_leave_out_local_deletes_and_type_changes() {
    // a: deleted on the server (counted); b: became a directory there (row 19, not counted);
    // c: deleted here (a remote delete, not a local one).
    let plan = Fixture::new(
        FOUR,
        "a file h1\nb file h2\nz file h9",
        "b dir id=11\nc file h3\nz file h9",
    )
    .plan();
    let counted: Vec<String> = plan
        .counted_deletes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(counted, ["a"]);
}

fn counted_path(op: &crate::PlanOp) -> Option<crate::RelPath> {
    match op {
        crate::PlanOp::DeleteLocal { path, .. } => Some(path.clone()),
        _ => None,
    }
}
