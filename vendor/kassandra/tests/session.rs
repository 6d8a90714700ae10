use insta::assert_debug_snapshot;
use kassandra::{
    cql::value::CqlValue,
    frame::{
        request::{execute::Execute, query::Query, QueryFlags, QueryParameters},
        response::result::{QueryResult, Rows},
        value::FrameValue,
    },
    KassandraSession,
};

macro_rules! exec {
    ($session: tt, $query: tt) => {
        $session.process(Query::simple($query).unwrap()).unwrap()
    };
}

pub fn session() -> KassandraSession {
    let mut session = KassandraSession::new();
    let result = exec!(
        session,
        "CREATE KEYSPACE cycling
          WITH REPLICATION = {
           'class' : 'SimpleStrategy',
           'replication_factor' : 1
          };"
    );

    assert!(matches! {result, QueryResult::SchemaChange(_)});

    let result = exec!(
        session,
        "CREATE TABLE cycling.cyclist_name (
                       id int PRIMARY KEY,
                       lastname text,
                       firstname text,
                       records map<text, text>);"
    );
    assert!(matches! {result, QueryResult::SchemaChange(_)});
    session
}

#[test]
fn create_session_and_table() {
    let _ = session();
}

#[test]
fn scan_simple_data() {
    let mut session = session();
    let result = exec!(
        session,
        "insert into cycling.cyclist_name (id, lastname, firstname, records) values (1, 'john', 'johnson', {'f1': '120', 'f2': '126'});"
    );
    assert!(matches! { result, QueryResult::Void});
    let QueryResult::Rows(rows) = exec!(session, "select * from cycling.cyclist_name;") else {
        panic!("invalid return type");
    };
    assert_debug_snapshot!("select all", rows);

    let QueryResult::Rows(rows) = exec!(
        session,
        "select id, firstname as name, toJson(records) as rec from cycling.cyclist_name;"
    ) else {
        panic!("invalid return type");
    };
    assert_debug_snapshot!("select explicit columns", rows);

    let QueryResult::Rows(rows) = exec!(session, "select json * from cycling.cyclist_name;") else {
        panic!("invalid return type");
    };
    assert_eq!(rows.metadata.col_specs.len(), 1);
    assert_debug_snapshot!("select json", rows);
}

#[test]
fn select_simple_data() {
    let mut session = session();
    let _ = exec!(
        session,
        "insert into cycling.cyclist_name (id, lastname, firstname, records) values (1, 'john', 'johnson', {'f1': '120', 'f2': '126'});"
    );
    let _ = exec!(
        session,
        "insert into cycling.cyclist_name (id, lastname, firstname, records) values (2, 'smith', 'smithson', {'f1': '120', 'f2': '126'});"
    );

    let QueryResult::Rows(rows) = exec!(
        session,
        "select firstname as name, toJson(records) as rec from cycling.cyclist_name where id = 2;"
    ) else {
        panic!("invalid return type");
    };

    assert_debug_snapshot!("select single row", rows);
}

#[test]
fn select_from_system_schema() {
    let mut session = session();
    let QueryResult::Rows(rows) = exec!(
        session,
        "select table_name from system_schema.tables where keyspace_name = 'cycling';"
    ) else {
        panic!("")
    };
    assert_eq!(rows.rows.len(), 1);
}

/// The column names and the single row of a lightweight transaction's answer.
fn lwt_answer(result: QueryResult) -> (Vec<String>, Vec<Option<CqlValue>>) {
    let QueryResult::Rows(Rows { metadata, mut rows }) = result else {
        panic!("a conditional write answers with rows, got {result:?}");
    };
    assert_eq!(rows.len(), 1, "one row");
    let spec = metadata.global_spec.expect("the table's spec");
    assert_eq!(
        (spec.ks_name.as_str(), spec.table_name.as_str()),
        ("cycling", "cyclist_name")
    );
    let names = metadata.col_specs.into_iter().map(|c| c.name).collect();
    (names, rows.remove(0).columns)
}

fn rows(result: QueryResult) -> Vec<Vec<Option<CqlValue>>> {
    let QueryResult::Rows(rows) = result else {
        panic!("rows expected, got {result:?}");
    };
    rows.rows.into_iter().map(|r| r.columns).collect()
}

fn run(session: &mut KassandraSession, query: &str) -> QueryResult {
    session.process(Query::simple(query).unwrap()).unwrap()
}

fn text(s: &str) -> Option<CqlValue> {
    Some(CqlValue::Text(s.to_owned()))
}

#[test]
fn insert_if_not_exists_applies_once_and_answers_with_the_existing_row() {
    let mut session = session();
    let applied = exec!(
        session,
        "INSERT INTO cycling.cyclist_name (id, lastname, firstname) VALUES (1, 'john', 'johnson') IF NOT EXISTS"
    );
    let (names, row) = lwt_answer(applied);
    assert_eq!(names, ["[applied]"]);
    assert_eq!(row, [Some(CqlValue::Boolean(true))]);

    let refused = exec!(
        session,
        "INSERT INTO cycling.cyclist_name (id, lastname, firstname) VALUES (1, 'smith', 'smithson') IF NOT EXISTS USING TTL 60"
    );
    let (names, row) = lwt_answer(refused);
    assert_eq!(
        names,
        ["[applied]", "id", "lastname", "firstname", "records"]
    );
    assert_eq!(
        row,
        [
            Some(CqlValue::Boolean(false)),
            Some(CqlValue::Int(1)),
            text("john"),
            text("johnson"),
            None
        ]
    );
    let stored = rows(exec!(
        session,
        "select lastname, firstname from cycling.cyclist_name where id = 1"
    ));
    assert_eq!(
        stored,
        [vec![text("john"), text("johnson")]],
        "not overwritten"
    );

    // Without a condition, an insert still overwrites and answers nothing.
    let plain = exec!(
        session,
        "INSERT INTO cycling.cyclist_name (id, lastname) VALUES (1, 'smith')"
    );
    assert!(matches!(plain, QueryResult::Void), "{plain:?}");
    let stored = rows(exec!(
        session,
        "select lastname from cycling.cyclist_name where id = 1"
    ));
    assert_eq!(stored, [vec![text("smith")]]);
}

#[test]
fn update_if_exists_applies_only_to_an_existing_row() {
    let mut session = session();
    let _ = exec!(
        session,
        "INSERT INTO cycling.cyclist_name (id, lastname, firstname) VALUES (1, 'john', 'johnson')"
    );

    let applied = exec!(
        session,
        "UPDATE cycling.cyclist_name SET firstname = 'jack' WHERE id = 1 IF EXISTS"
    );
    assert_eq!(
        lwt_answer(applied),
        (
            vec!["[applied]".to_owned()],
            vec![Some(CqlValue::Boolean(true))]
        )
    );
    let refused = exec!(
        session,
        "UPDATE cycling.cyclist_name SET firstname = 'jack' WHERE id = 2 IF EXISTS"
    );
    assert_eq!(
        lwt_answer(refused),
        (
            vec!["[applied]".to_owned()],
            vec![Some(CqlValue::Boolean(false))]
        ),
        "a refused IF EXISTS answers [applied] alone"
    );

    let all = rows(exec!(
        session,
        "select id, firstname from cycling.cyclist_name"
    ));
    assert_eq!(
        all,
        [vec![Some(CqlValue::Int(1)), text("jack")]],
        "no row 2"
    );

    // Without a condition, an update is an upsert and answers nothing.
    let plain = exec!(
        session,
        "UPDATE cycling.cyclist_name SET firstname = 'jill' WHERE id = 2"
    );
    assert!(matches!(plain, QueryResult::Void), "{plain:?}");
    assert_eq!(
        rows(exec!(session, "select id from cycling.cyclist_name")).len(),
        2
    );
}

#[test]
fn conditions_compare_the_whole_primary_key() {
    let mut session = session();
    let _ = exec!(
        session,
        "CREATE TABLE cycling.laps (rider int, lap int, seconds int, PRIMARY KEY ((rider), lap))"
    );
    let applied = |result: QueryResult| {
        let QueryResult::Rows(rows) = result else {
            panic!("rows expected, got {result:?}");
        };
        rows.rows[0].columns[0] == Some(CqlValue::Boolean(true))
    };
    let insert = |lap: i32| {
        format!(
            "INSERT INTO cycling.laps (rider, lap, seconds) VALUES (7, {lap}, 90) IF NOT EXISTS"
        )
    };
    assert!(applied(run(&mut session, &insert(1))));
    assert!(
        applied(run(&mut session, &insert(2))),
        "another clustering key of the same partition"
    );
    assert!(!applied(run(&mut session, &insert(1))));
    let update = |lap: i32| {
        format!("UPDATE cycling.laps SET seconds = 80 WHERE rider = 7 AND lap = {lap} IF EXISTS")
    };
    assert!(applied(run(&mut session, &update(2))));
    assert!(!applied(run(&mut session, &update(3))));
    let laps = rows(exec!(
        session,
        "select lap, seconds from cycling.laps where rider = 7"
    ));
    assert_eq!(
        laps,
        [
            vec![Some(CqlValue::Int(1)), Some(CqlValue::Int(90))],
            vec![Some(CqlValue::Int(2)), Some(CqlValue::Int(80))]
        ]
    );
}

#[test]
fn prepared_lightweight_transactions_take_bound_values() {
    let mut session = session();
    let QueryResult::Prepared(prepared) = session
        .prepare(
            "INSERT INTO cycling.cyclist_name (id, lastname) VALUES (?, ?) IF NOT EXISTS USING TTL 60"
                .parse()
                .unwrap(),
        )
        .unwrap()
    else {
        panic!("prepared");
    };
    assert!(
        prepared.result_metadata.col_specs.is_empty(),
        "no fixed result columns: the driver reads them from every answer"
    );
    assert_eq!(prepared.prepared_metadata.col_specs.len(), 2);
    let id = prepared.id.to_be_bytes();
    let execute = |lastname: &'static [u8]| Execute {
        id: &id,
        parameters: QueryParameters {
            flags: QueryFlags::VALUES,
            data: vec![FrameValue::Some(&[0, 0, 0, 5]), FrameValue::Some(lastname)],
            ..QueryParameters::default()
        },
    };

    let (names, row) = lwt_answer(session.execute(execute(b"first")).unwrap());
    assert_eq!(
        (names, row),
        (
            vec!["[applied]".to_owned()],
            vec![Some(CqlValue::Boolean(true))]
        )
    );
    let (names, row) = lwt_answer(session.execute(execute(b"second")).unwrap());
    assert_eq!(
        names,
        ["[applied]", "id", "lastname", "firstname", "records"]
    );
    assert_eq!(
        row,
        [
            Some(CqlValue::Boolean(false)),
            Some(CqlValue::Int(5)),
            text("first"),
            None,
            None
        ]
    );

    let QueryResult::Prepared(update) = session
        .prepare(
            "UPDATE cycling.cyclist_name SET firstname = ? WHERE id = ? IF EXISTS"
                .parse()
                .unwrap(),
        )
        .unwrap()
    else {
        panic!("prepared");
    };
    let id = update.id.to_be_bytes();
    let execute = |key: &'static [u8]| Execute {
        id: &id,
        parameters: QueryParameters {
            flags: QueryFlags::VALUES,
            data: vec![FrameValue::Some(b"ada"), FrameValue::Some(key)],
            ..QueryParameters::default()
        },
    };
    let (_, row) = lwt_answer(session.execute(execute(&[0, 0, 0, 5])).unwrap());
    assert_eq!(row, [Some(CqlValue::Boolean(true))]);
    let (_, row) = lwt_answer(session.execute(execute(&[0, 0, 0, 6])).unwrap());
    assert_eq!(row, [Some(CqlValue::Boolean(false))]);
}
